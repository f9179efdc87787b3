"""Load benchmark (issue #8): many callers at once against the real server, optionally during an ingestion.

    .venv/bin/python -m bench.load_bench --db sqlite --clients 20 --seconds 60 [--workers 1] [--during-ingest]
    .venv/bin/python -m bench.load_bench --db postgres --clients 100 --seconds 60 --workers 2 [--during-ingest]
    .venv/bin/python -m bench.load_bench --blackhole
    .venv/bin/python -m bench.load_bench --db sqlite --clients 20 --seconds 60 --ft-down blackhole

A département is built once per run in a fresh database: a monthly stock of ~N persons (initial stock), then
a daily file of new demands and changes (the nouveaux entrants). `passerelle serve` then runs in its own
process(es) on loopback, and this process drives it with asyncio + httpx: N clients, each looping over a mix
of worklist pages, person reads, person searches (organisme + matricule) and event posts, for D seconds.
With `--during-ingest`, `passerelle flux ingest` applies a second monthly file of ~N persons (the same
population a month later, 10 % of foyers changed) while the load runs; the figures are then those of the
requests that started while it ran. `--blackhole` times /ready against a listener that never answers.
With `--ft-down refused|blackhole`, the server's France Travail is a closed port or a listener that never
answers, and a fifth kind of request (`ft_refresh`, a France Travail refresh, answered 503) joins the mix:
the other kinds' p95 should stay those of a run without it (issue #12).

Each simulated client has an API client (a key) of its own, as real callers do: the per-client rate limit
(issue #14) then refuses none of them, and every request is a real read or write (issue #27; with one key
shared by all, most answers were 429). `--mix reads` sends reads only (worklist pages, person reads,
searches), `--mix person` (or any one kind) that kind only. `--server-tree DIR` runs the server and the
ingestion from another checkout of the code (a baseline, side by side; same database schema).

Prints p50/p95/p99 per kind and overall, throughput, errors (any answer but 2xx, 429 included; a France
Travail refresh's expected 503 excepted) by status and by message, and the server's CPU time per request:
utime + stime of the server's processes (uvicorn's and its workers', from /proc/<pid>/stat) before and after
the load, divided by the requests answered (PostgreSQL's processes likewise). Loopback only; every loop is
bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx

from bench.common import drop_pg_schema, fresh_pg_schema

OUT = Path(__file__).parent / "out"
WEIGHTS = {"worklist": 30, "person": 35, "search": 20, "event": 15}
MIXES = {"all": tuple(WEIGHTS), "reads": ("worklist", "person", "search"), **{k: (k,) for k in WEIGHTS}}
PG_BASE = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def make_files(foyers: int) -> dict[str, Path]:
    """Stock (M, 1 March), daily (I, 4 March), the next monthly (M, 1 April): cached under bench/out."""
    from app.flux.generator import FluxGenerator

    directory = OUT / f"load-{foyers}"
    names = {"stock": "CAF_551_M_20240301.xml", "daily": "CAF_551_I_20240304.xml", "monthly": "CAF_551_M_20240401.xml"}
    files = {k: directory / v for k, v in names.items()}
    if all(p.exists() for p in files.values()):
        return files
    directory.mkdir(parents=True, exist_ok=True)
    gen = FluxGenerator(foyers, date(2024, 3, 1), seed=11, msa_share=0.0)
    gen.write_file(directory, gen.foyers, "M", "CAF", date(2024, 3, 1), date(2024, 3, 1))
    rng = random.Random(12)
    new = [gen._new_foyer(date(2024, 3, 4), msa=False) for _ in range(max(200, foyers // 20))]
    changed = rng.sample(gen.foyers, k=max(100, foyers // 40))
    for f in changed:
        adults = [p for p in f.persons if p.role in ("DEM", "CJT")]
        adults[0].sdd = not adults[0].sdd
    gen.write_file(directory, changed + new, "I", "CAF", date(2024, 3, 4), date(2024, 3, 4))
    everyone = gen.foyers + new
    for f in rng.sample(everyone, k=len(everyone) // 10):
        adults = [p for p in f.persons if p.role in ("DEM", "CJT")]
        adults[0].sdd = not adults[0].sdd
    gen.write_file(directory, everyone, "M", "CAF", date(2024, 4, 1), date(2024, 4, 1))
    return files


def prepare_database(kind: str, files: dict[str, Path], clients: int) -> tuple[dict[str, str], dict[str, Any]]:
    """A fresh database with the stock and the daily file applied; returns the server's environment and
    what the clients need (an API key per client, person ids, waiting ids, search keys)."""
    from sqlalchemy import select

    from app import migrate
    from app.admin.clients import create_client
    from app.db import dispose_engines, get_engine, session_scope
    from app.flux.loader import IngestOptions, ingest_file
    from app.models import EntryEpisode, Person, PersonState
    from app.settings import Settings

    data_dir = OUT / f"load-data-{kind}"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    if kind == "sqlite":
        url = f"sqlite:///{data_dir / 'load.db'}"
    else:
        url = fresh_pg_schema(PG_BASE, pg_schema())
        if os.environ.get("LOAD_BENCH_ASYNC_COMMIT"):  # diagnosis only: is the WAL flush of each commit the limit?
            url += "%20-csynchronous_commit%3Doff"
    env = {
        **os.environ,
        "PASSERELLE_ENV": "dev",
        "PASSERELLE_DATA_DIR": str(data_dir),
        "PASSERELLE_DATABASE_URL": url,
        "PASSERELLE_LOG_LEVEL": "WARNING",
    }
    settings = Settings(env="dev", data_dir=data_dir, database_url=url)
    migrate.upgrade(settings)
    engine = get_engine(settings)
    t = time.perf_counter()
    for name, day, initial in (("stock", date(2024, 3, 1), True), ("daily", date(2024, 3, 4), False)):
        report = ingest_file(engine, settings, files[name], IngestOptions(received_on=day, initial_stock=initial))
        assert report.status == "applied", report.error
    print(f"setup: stock + daily applied in {time.perf_counter() - t:.1f} s", flush=True)
    with session_scope(settings, write=True) as session:
        keys_of_clients = [
            create_client(
                session,
                settings,
                name=f"load-{n}",
                departements=["055"],
                scopes=["persons:read", "orientation:write", "ft:read"],
            ).key
            for n in range(clients)
        ]
    with engine.connect() as conn:
        persons = list(conn.execute(select(Person.id)).scalars())
        waiting = list(conn.execute(select(EntryEpisode.person_id).distinct()).scalars())
        keys = [
            tuple(r)
            for r in conn.execute(
                select(PersonState.numorg, PersonState.matricule, PersonState.role)
                .where(PersonState.matricule.is_not(None))
                .limit(5000)
            )
        ]
    dispose_engines()
    return env, {"api_keys": keys_of_clients, "persons": persons, "waiting": waiting, "keys": keys}


def pg_schema() -> str:
    """This run's own schema (other runs may share the database), dropped at its end."""
    return f"bench_load_{os.getpid()}"


def _cpu_seconds(pid: int) -> float:
    fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, str]]:
    found: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            found[int(entry.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), name)
    return found


def cpu_snapshot(server_pid: int) -> dict[str, float]:
    """CPU seconds used so far by the server (its process tree), PostgreSQL's processes, and this process."""
    procs = _processes()
    tree, todo = {server_pid}, [server_pid]
    while todo:
        parent = todo.pop()
        for pid, (ppid, _name) in procs.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                todo.append(pid)
    totals = {"server": 0.0, "postgres": 0.0}
    for pid, (_ppid, name) in procs.items():
        key = "server" if pid in tree else "postgres" if name.startswith("postgres") else None
        if key:
            with contextlib.suppress(OSError):
                used = _cpu_seconds(pid)
                totals[key] += used
                totals[f"{key} pid {pid}"] = used
    times = os.times()
    totals["load generator"] = times.user + times.system
    return totals


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def code_env(env: dict[str, str], tree: Path | None) -> tuple[dict[str, str], Path | None]:
    """The environment and working directory that run `app` from `tree` (None: this checkout)."""
    if tree is None:
        return env, None
    return env | {"PYTHONPATH": str(tree)}, tree


def start_server(env: dict[str, str], workers: int, tree: Path | None = None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = (OUT / "server.log").open("wb")  # the server's own log lines (warnings and errors), for diagnosis
    env, cwd = code_env(env, tree)
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", str(workers), "--no-migrate"],
        env=env,
        cwd=cwd,
        stdout=log,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not become ready")


@dataclass
class Sample:
    kind: str
    started: float
    seconds: float
    status: int
    message: str = ""


@dataclass
class Load:
    samples: list[Sample] = field(default_factory=list)


FT_AGENT = {"X-Agent-Identifiant": "BENCH", "X-Agent-Nom": "LOAD", "X-Agent-Prenom": "bench"}


async def client_loop(n: int, base: str, data: dict[str, Any], done: Any, load: Load) -> None:
    rng = random.Random(n)
    weights_by_kind = {k: WEIGHTS[k] for k in data["mix"]} | ({"ft_refresh": 10} if data.get("ft_down") else {})
    kinds, weights = list(weights_by_kind), list(weights_by_kind.values())
    day = date.today().isoformat()
    seq = 0
    key = data["api_keys"][n % len(data["api_keys"])]  # a key of its own
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}, timeout=120) as http:
        while not done():
            kind = rng.choices(kinds, weights)[0]
            seq += 1
            started = time.monotonic()
            try:
                if kind == "worklist":
                    r = await http.get("/api/v1/worklist", params={"limit": 50, "offset": rng.randrange(0, 500, 50)})
                elif kind == "person":
                    r = await http.get(f"/api/v1/persons/{rng.choice(data['persons'])}")
                elif kind == "ft_refresh":
                    r = await http.post(
                        f"/api/v1/persons/{rng.choice(data['persons'])}/france-travail/refresh", headers=FT_AGENT
                    )
                elif kind == "search":
                    numorg, matricule, role = rng.choice(data["keys"])
                    r = await http.post(
                        "/api/v1/persons/search",
                        json={"fonorg": "CAF", "numorg": numorg, "matricule": matricule, "role": role},
                    )
                else:
                    r = await http.post(
                        f"/api/v1/persons/{rng.choice(data['waiting'])}/events",
                        json={"type": "invitation", "date": day, "external_id": f"load-{n}-{seq}-{started:.6f}"},
                    )
                message = "" if r.status_code < 400 else r.json().get("error", "")
                load.samples.append(Sample(kind, started, time.monotonic() - started, r.status_code, message))
            except httpx.HTTPError as exc:
                load.samples.append(Sample(kind, started, time.monotonic() - started, 0, type(exc).__name__))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def is_error(s: Sample) -> bool:
    """Any answer but a 2xx (a 429 too: the benchmark measures real reads and writes); France Travail down,
    its 503 is the expected answer of a refresh, not an error of the service."""
    return s.status == 0 or (s.status >= 300 and not (s.kind == "ft_refresh" and s.status == 503))


def summarize(samples: list[Sample], title: str, window: float) -> dict[str, Any]:
    print(f"\n### {title}: {len(samples)} requests in {window:.1f} s ({len(samples) / max(window, 1e-9):.0f}/s)")
    print("| kind | requests | p50 ms | p95 ms | p99 ms | max ms | errors |")
    print("|---|---|---|---|---|---|---|")
    by_kind: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_kind[s.kind].append(s)
    out: dict[str, Any] = {}
    for kind in [*(k for k in [*WEIGHTS, "ft_refresh"] if k in by_kind), "all"]:
        group = samples if kind == "all" else by_kind.get(kind, [])
        ms = [s.seconds * 1000 for s in group]
        errors = sum(1 for s in group if is_error(s))
        p = {q: percentile(ms, q) for q in (0.5, 0.95, 0.99)}
        out[kind] = {"n": len(group), "p50": p[0.5], "p95": p[0.95], "p99": p[0.99], "errors": errors}
        print(
            f"| {kind} | {len(group)} | {p[0.5]:.0f} | {p[0.95]:.0f} | {p[0.99]:.0f} "
            f"| {max(ms) if ms else 0:.0f} | {errors} |"
        )
    statuses = Counter(s.status for s in samples)
    messages = Counter(f"{s.status} {s.message}" for s in samples if is_error(s))
    print(f"statuses: {dict(sorted(statuses.items()))}; errors by message: {dict(messages) or 'none'}")
    # issue #27 item 3: on SQLite during a file, an event post may be kept aside (202, a success)
    events = Counter(s.status for s in by_kind.get("event", []))
    print(f"event posts: {events[201]} applied at once (201), {events[202]} kept aside (202)")
    return out


def run_load(args: argparse.Namespace) -> None:
    files = make_files(args.foyers)
    print(f"files: {', '.join(f'{k} {p.stat().st_size / 1e6:.0f} MB' for k, p in files.items())}", flush=True)
    env, data = prepare_database(args.db, files, args.clients)
    data["mix"] = MIXES[args.mix]
    print(f"population: {len(data['persons'])} persons, {len(data['waiting'])} with an entry episode", flush=True)
    hole = None
    if args.ft_down != "none":
        if args.ft_down == "blackhole":
            hole = black_hole()
            ft_base = f"http://127.0.0.1:{hole.getsockname()[1]}"
        else:
            ft_base = f"http://127.0.0.1:{free_port()}"  # nothing listens there: refused at once
        env = env | {
            "PASSERELLE_FT_AUTH_URL": ft_base,
            "PASSERELLE_FT_API_URL": f"{ft_base}/partenaire",
            "PASSERELLE_FT_CLIENT_ID": "bench",
            "PASSERELLE_FT_CLIENT_SECRET": "bench-secret-not-used",
            "PASSERELLE_FT_CONNECT_TIMEOUT_SECONDS": "2",
        }
        data["ft_down"] = args.ft_down
    server, base = start_server(env, args.workers, args.server_tree)
    ingestion: dict[str, Any] = {}
    load = Load()
    try:

        def ingest() -> None:
            time.sleep(args.warmup)
            cmd = [sys.executable, "-m", "app.cli", "flux", "ingest", str(files["monthly"]), "--json"]
            cmd += ["--received-on", "2024-04-01"]
            ingestion["start"] = time.monotonic()
            ingest_env, cwd = code_env(env, args.server_tree)
            finished = subprocess.run(cmd, env=ingest_env, cwd=cwd, capture_output=True, text=True, check=False)
            ingestion["end"] = time.monotonic()
            ingestion["exit"] = finished.returncode
            ok = finished.returncode == 0
            ingestion["report"] = json.loads(finished.stdout)[0] if ok else finished.stderr[-1500:]

        async def main() -> None:
            end = time.monotonic() + args.seconds
            worker = threading.Thread(target=ingest) if args.during_ingest else None
            if worker:
                worker.start()

            def done() -> bool:  # the load lasts D seconds, and at least as long as the ingestion
                return time.monotonic() >= end and (worker is None or not worker.is_alive())

            await asyncio.gather(*(client_loop(i, base, data, done, load) for i in range(args.clients)))
            if worker:
                worker.join()

        started = time.monotonic()
        cpu_before = cpu_snapshot(server.pid)
        asyncio.run(main())
        elapsed = time.monotonic() - started
        cpu_after = cpu_snapshot(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            print("the server did not stop within 30 s of SIGTERM: killed", flush=True)
            server.kill()
        if hole is not None:
            hole.close()
        if args.db == "postgres":
            drop_pg_schema(PG_BASE, pg_schema())
    print(f"\nMachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"Command: {' '.join(sys.argv)}")
    print(f"Server code: {args.server_tree or 'this checkout'}; load average at the end: {os.getloadavg()}")
    used = {k: cpu_after[k] - cpu_before.get(k, 0.0) for k in cpu_after if not k.startswith("postgres")}
    # PostgreSQL's processes are the machine's (other sessions' too): those alive at the end count (the
    # server's backends start during the load), and one that ended meanwhile is not subtracted
    used["postgres"] = sum(v - cpu_before.get(k, 0.0) for k, v in cpu_after.items() if k.startswith("postgres pid"))
    print(
        "CPU used during the load (of "
        f"{elapsed * (os.cpu_count() or 1):.0f} core-seconds): "
        + ", ".join(f"{k} {v:.0f} s ({v / elapsed:.2f} cores)" for k, v in used.items())
        + " (the ingestion's own process is not counted)"
    )
    answered = max(len(load.samples), 1)
    pg = f"; PostgreSQL's processes: {used['postgres'] * 1000 / answered:.2f} ms" if args.db == "postgres" else ""
    print(
        f"Server CPU per request: {used['server'] * 1000 / answered:.2f} ms "
        f"({used['server']:.1f} s for {len(load.samples)} requests, mix {args.mix}){pg}"
    )
    summarize(load.samples, f"{args.db}, {args.workers} worker(s), {args.clients} clients, whole run", elapsed)
    if args.during_ingest:
        a, b = ingestion["start"], ingestion["end"]
        during = [s for s in load.samples if a <= s.started <= b]
        summarize(during, f"requests started while the ingestion ran ({b - a:.1f} s)", b - a)
        report = ingestion["report"]
        if isinstance(report, dict):
            print(
                f"ingestion: exit {ingestion['exit']}, {report['status']}, {report['persons_read']} persons read, "
                f"{report['state_changes']} state changes, {report['duration_ms'] / 1000:.1f} s + episodes "
                f"{(report.get('episodes_ms') or 0) / 1000:.1f} s ({report.get('episodes_refreshed')} persons), "
                f"episodes error: {report.get('episodes_error')}"
            )
        else:
            print(f"ingestion: exit {ingestion['exit']}: {report}")


def black_hole() -> socket.socket:
    """A loopback listener that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(256)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return listener


def run_blackhole() -> None:
    listener = black_hole()
    data_dir = OUT / "load-data-blackhole"
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PASSERELLE_ENV": "dev",
        "PASSERELLE_DATA_DIR": str(data_dir),
        "PASSERELLE_DATABASE_URL": f"postgresql+psycopg://x@127.0.0.1:{listener.getsockname()[1]}/x",
        "PASSERELLE_LOG_LEVEL": "CRITICAL",
    }
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--no-migrate"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        times = []
        for _ in range(10):
            t = time.monotonic()
            r = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=10)
            times.append(time.monotonic() - t)
            assert r.status_code == 503, r.text
        print(
            f"/ready against a black-hole database: 10 × 503, max {max(times):.2f} s, "
            f"median {statistics.median(times):.2f} s; body {r.json()}"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        listener.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--foyers", type=int, default=43_500, help="foyers of the monthly files (~2.3 persons each)")
    parser.add_argument("--during-ingest", action="store_true")
    parser.add_argument("--mix", choices=tuple(MIXES), default="all", help="the kinds of requests sent")
    parser.add_argument("--server-tree", type=Path, help="run the server (and the ingestion) from this checkout")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load before the ingestion starts")
    parser.add_argument("--blackhole", action="store_true")
    parser.add_argument(
        "--ft-down",
        choices=("none", "refused", "blackhole"),
        default="none",
        help="France Travail down (a closed port, or a listener that never answers) and refreshes in the mix",
    )
    args = parser.parse_args()
    if args.blackhole:
        run_blackhole()
    else:
        run_load(args)


if __name__ == "__main__":
    main()
