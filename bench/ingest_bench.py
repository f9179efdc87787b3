"""Benchmark of flux ingestion (issue 3). One command:

    .venv/bin/python -m bench.ingest_bench [--persons 500000 | --foyers 60000] [--daily-foyers 5000] [--skip-postgres]
    .venv/bin/python -m bench.ingest_bench --foyers 60000 --cli [--trees BASE,NEW] [--rounds 3]
    .venv/bin/python -m bench.ingest_bench --foyers 60000 --cli --daily [--trees BASE,NEW] [--rounds 3]

`--cli` (issue #27) times `python -m app flux ingest` as the operator runs it, from each code tree in turn
(e.g. a baseline worktree and this one), beside a bare pass measured just before each ingestion: wall
seconds, CPU seconds of the command and its reading process, the process tree's peak memory. With `--daily`
(issue #27, item 2) it times only the daily file, as the operator runs it: the stock already loaded (through the
CLI, untimed), then one daily file through the CLI.

Generates (once, cached under bench/out/) a monthly file of ~N persons and a daily file of D foyers on top
of it; measures, in the same run, a bare lxml.iterparse pass over the monthly file (the reference), then
ingests it into a fresh SQLite database and a fresh PostgreSQL schema (each in a subprocess, to read its
peak memory), then the daily file on top. Prints the figures as a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

from lxml import etree

from app.flux.generator import FluxGenerator
from bench.common import fresh_pg_schema, fresh_sqlite

OUT = Path(__file__).parent / "out"
PERSONS_PER_FOYER = 2.3  # what the generator produces on average (DEM, CJT 30 %, children)


def make_files(persons: int, daily_foyers: int, foyers: int | None = None) -> tuple[Path, Path]:
    foyers = foyers or int(persons / PERSONS_PER_FOYER)
    directory = OUT / (f"ingest-{persons}" if foyers == int(persons / PERSONS_PER_FOYER) else f"ingest-f{foyers}")
    monthly = directory / "CAF_551_M_20240301.xml"
    daily = directory / "CAF_551_I_20240304.xml"
    if monthly.exists() and daily.exists():
        return monthly, daily
    directory.mkdir(parents=True, exist_ok=True)
    gen = FluxGenerator(foyers, date(2024, 3, 1), seed=7, msa_share=0.0)
    gen.write_file(directory, gen.foyers, "M", "CAF", date(2024, 3, 1), date(2024, 3, 1))
    rng = random.Random(8)
    changed = rng.sample(gen.foyers, k=int(daily_foyers * 0.8))
    for f in changed:
        adults = [p for p in f.persons if p.role in ("DEM", "CJT")]
        adults[0].sdd = not adults[0].sdd
    new = [gen._new_foyer(date(2024, 3, 4), msa=False) for _ in range(daily_foyers - len(changed))]
    gen.write_file(directory, changed + new, "I", "CAF", date(2024, 3, 4), date(2024, 3, 4))
    return monthly, daily


def bare_iterparse(path: Path) -> dict[str, float]:
    """The reference: lxml.iterparse over every element (default events), clearing each foyer as it goes
    (without clearing, the tree of a big file does not fit in memory). Also the tag-filtered variant."""
    t = time.perf_counter()
    for _, el in etree.iterparse(str(path)):
        if el.tag == "InfosFoyerRSA":
            el.clear(keep_tail=False)
            while el.getprevious() is not None:
                del el.getparent()[0]
    every = time.perf_counter() - t
    t = time.perf_counter()
    for _, el in etree.iterparse(str(path), tag="InfosFoyerRSA"):
        el.clear(keep_tail=False)
        while el.getprevious() is not None:
            del el.getparent()[0]
    filtered = time.perf_counter() - t
    return {"bare_all_elements_s": round(every, 2), "bare_tag_filtered_s": round(filtered, 2)}


def run_once(url: str, path: Path, data_dir: Path, *extra: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.ingest_once", url, str(path), str(data_dir), *extra],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PASSERELLE_LOG_LEVEL": "WARNING"},
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _tree_rss(root: int, peaks: dict[int, int]) -> int:
    """The resident memory (KiB) of `root` and every process under it; each one's peak (VmHWM) kept in `peaks`."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        peaks[pid] = max(peaks.get(pid, 0), int(line.split()[1]))
        except OSError:
            continue
    return total


def run_cli(tree: Path, url: str, data_dir: Path, path: Path, received: str, *extra: str) -> dict[str, object]:
    """`passerelle flux ingest FILE` as the operator runs it (`python -m app`, from `tree`): wall seconds from
    the command's start to its exit, CPU seconds of the process and its children, the process tree's peak
    memory (its summed RSS sampled every 20 ms; and the sum of each process's own peak, an upper bound)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "PASSERELLE_ENV": "dev",
        "PASSERELLE_DATA_DIR": str(data_dir),
        "PASSERELLE_DATABASE_URL": url,
        "PASSERELLE_LOG_LEVEL": "WARNING",
    }
    cmd = [sys.executable, "-m", "app", "flux", "ingest", str(path), "--received-on", received, "--json", *extra]
    peaks: dict[int, int] = {}
    peak_sum = 0
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak_sum = max(peak_sum, _tree_rss(proc.pid, peaks))
        time.sleep(0.02)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = proc.communicate()
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)}: exit {proc.returncode}: {err.decode()[-2000:]}")
    report = json.loads(out)[0]
    return {
        "status": report["status"],
        "seconds": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_tree_mb": round(peak_sum / 1024, 1),
        "peaks_sum_mb": round(sum(peaks.values()) / 1024, 1),
        "foyers": report["foyers"],
        "persons_read": report.get("persons_read"),
    }


def migrate_cli(tree: Path, url: str, data_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree), "PASSERELLE_ENV": "dev", "PASSERELLE_DATA_DIR": str(data_dir)}
    env |= {"PASSERELLE_DATABASE_URL": url, "PASSERELLE_LOG_LEVEL": "WARNING"}
    subprocess.run([sys.executable, "-m", "app", "db", "upgrade"], cwd=tree, env=env, check=True, capture_output=True)


def bare_all(path: Path) -> float:
    return bare_iterparse(path)["bare_all_elements_s"]


def _fresh_targets(args: argparse.Namespace, sqlite_name: str, schema: str) -> Iterator[tuple[int, str, Path, str]]:
    """(round, database, tree, url) of every run, each on a fresh database migrated by that tree's CLI."""
    trees = [Path(t).resolve() for t in args.trees.split(",")]
    targets = [("SQLite", None)] if args.skip_postgres else [("SQLite", None), ("PostgreSQL", args.pg_url)]
    for rnd in range(1, args.rounds + 1):
        for name, base in targets:
            for tree in trees:
                url = fresh_sqlite(OUT / sqlite_name) if base is None else fresh_pg_schema(base, schema)
                migrate_cli(tree, url, OUT / "data")
                yield rnd, name, tree, url


def cli_main(args: argparse.Namespace, monthly: Path, daily: Path) -> None:
    """--cli: each tree (the code as given, e.g. a baseline worktree and this one) in turn, `--rounds` times,
    each ingestion beside a bare pass measured just before it."""
    data_dir = OUT / "data"
    data_dir.mkdir(exist_ok=True)
    rows = []
    for rnd, name, tree, url in _fresh_targets(args, "cli.db", "bench_ingest_cli"):
        bare = bare_all(monthly)
        m = run_cli(tree, url, data_dir, monthly, "2024-03-01", "--initial-stock")
        d = run_cli(tree, url, data_dir, daily, "2024-03-04")
        load = os.getloadavg()[0]
        row = (rnd, name, tree.name, bare, m, d, load)
        rows.append(row)
        print(row, flush=True)
    print(f"\nMachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print("| round | database | code | bare s | monthly s | × bare | CPU s | peak MB tree (Σ peaks) | daily s | load |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for rnd, name, code, bare, m, d, load in rows:
        secs = float(m["seconds"])  # type: ignore[arg-type]
        print(
            f"| {rnd} | {name} | {code} | {bare:.2f} | {secs:.2f} | {secs / bare:.2f} | {m['cpu_s']} "
            f"| {m['peak_tree_mb']} ({m['peaks_sum_mb']}) | {d['seconds']} | {load:.1f} |"
        )


def daily_main(args: argparse.Namespace, monthly: Path, daily: Path) -> None:
    """--daily: the operator's daily run. For each tree, round and database: a fresh database, migrated, the
    stock (the monthly file, `--initial-stock`) loaded through the CLI and not timed, then the daily file through
    the CLI, timed (wall seconds from the command's start to its exit, CPU of the process and its children, peak
    memory). The daily file is a delta on top of that stock: `--daily-foyers` foyers, 80 % of them stock foyers
    whose first adult's droits et devoirs flip, 20 % new foyers (see `make_files`)."""
    data_dir = OUT / "data"
    data_dir.mkdir(exist_ok=True)
    rows = []
    for rnd, name, tree, url in _fresh_targets(args, "daily.db", "bench_daily_cli"):
        run_cli(tree, url, data_dir, monthly, "2024-03-01", "--initial-stock")
        d = run_cli(tree, url, data_dir, daily, "2024-03-04")
        load = os.getloadavg()[0]
        rows.append((rnd, name, tree.name, d, load))
        print(rows[-1], flush=True)
    print(f"\nMachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print("| round | database | code | daily s | CPU s | peak MB tree (Σ peaks) | foyers | load |")
    print("|---|---|---|---|---|---|---|---|")
    for rnd, name, code, d, load in rows:
        print(
            f"| {rnd} | {name} | {code} | {d['seconds']} | {d['cpu_s']} | {d['peak_tree_mb']} ({d['peaks_sum_mb']}) "
            f"| {d['foyers']} | {load:.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--persons", type=int, default=500_000)
    parser.add_argument("--foyers", type=int, default=None, help="monthly file size in foyers (instead of persons)")
    parser.add_argument("--cli", action="store_true", help="time `python -m app flux ingest` as the operator runs it")
    parser.add_argument(
        "--daily", action="store_true", help="--cli: time only the daily file, on the stock loaded (untimed) first"
    )
    parser.add_argument("--trees", default=str(Path(__file__).parent.parent), help="--cli: code trees, comma-separated")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--daily-foyers", type=int, default=5000)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()

    monthly, daily = make_files(args.persons, args.daily_foyers, args.foyers)
    print(f"monthly file: {monthly} ({monthly.stat().st_size / 1e6:.0f} MB); daily file: {daily}")
    if args.cli and args.daily:
        daily_main(args, monthly, daily)
        return
    if args.cli:
        cli_main(args, monthly, daily)
        return
    ref = bare_iterparse(monthly)
    print("reference:", ref)
    data_dir = OUT / "data"
    data_dir.mkdir(exist_ok=True)
    rows = []
    targets = [("SQLite", None)]
    if not args.skip_postgres:
        targets.append(("PostgreSQL", args.pg_url))
    for name, base in targets:
        url = fresh_sqlite(OUT / "bench.db") if base is None else fresh_pg_schema(base, "bench_ingest")
        m = run_once(url, monthly, data_dir, "2024-03-01", "--initial-stock")
        d = run_once(url, daily, data_dir, "2024-03-04", "--no-migrate")
        rows.append((name, m, d))
        print(name, "monthly:", m, "daily:", d)

    print()
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(
        "| database | monthly: persons | monthly s | × bare (all el.) | × bare (tag) | peak MB (+ reader) "
        "| daily foyers | daily s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, m, d in rows:
        secs = float(m["seconds"])  # type: ignore[arg-type]
        print(
            f"| {name} | {m['persons_read']} | {secs:.1f} | {secs / ref['bare_all_elements_s']:.2f} "
            f"| {secs / ref['bare_tag_filtered_s']:.2f} | {m['peak_rss_mb']} (+ {m.get('reader_peak_rss_mb')}) "
            f"| {d['foyers']} | {d['seconds']} |"
        )
    print(
        f"\nbare iterparse: {ref['bare_all_elements_s']} s (all elements), {ref['bare_tag_filtered_s']} s (tag filter)"
    )


if __name__ == "__main__":
    main()
