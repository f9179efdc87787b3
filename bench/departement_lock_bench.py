"""Two départements' files at once on one PostgreSQL (issue #27, second pass: the ingestion's lock).

    nice .venv/bin/python -m bench.departement_lock_bench [--big 20000] [--small 1000] [--rounds 2]

A big monthly stock of one département (055, `--big` foyers) is being applied when a small file of another
(093, `--small` foyers) arrives; then the two big stocks of two départements at once. Prints each file's wall
seconds and the whole scenario's. With one database-wide lock the small file waits for the whole stock; with
a lock per département it does not. Each round in a fresh schema `bench_deplock`, migrated to the head of the
code on PYTHONPATH (run it once with a baseline tree's `app` on PYTHONPATH for the figures before).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "out" / "deplock"


def _files(big: int, small: int, day: date) -> dict[str, Path]:
    from app.flux.generator import generate_single

    paths = {
        "big-055": OUT / f"big-055-{big}-{day}.xml",
        "big-093": OUT / f"big-093-{big}-{day}.xml",
        "small-093": OUT / f"small-093-{small}-{day}.xml",
    }
    OUT.mkdir(parents=True, exist_ok=True)
    for name, path in paths.items():
        if not path.exists():
            kind, dep = name.split("-")
            generated = generate_single(path, big if kind == "big" else small, day, seed=int(dep), departement=dep)
            generated.path.rename(path)
    return paths


def _fresh(pg_url: str) -> Any:
    from app import migrate
    from app.settings import Settings
    from bench.common import fresh_pg_schema

    url = fresh_pg_schema(pg_url, "bench_deplock")
    settings = Settings(env="test", database_url=url, data_dir=OUT / "data", log_level="WARNING")
    migrate.upgrade(settings)
    return settings


def _ingest(settings: Any, path: Path, dep: str, day: date, out: Any, started: Any) -> None:
    """One ingestion in a process of its own, as `passerelle flux ingest` runs (two in one process would
    share its interpreter lock)."""
    from app.db import get_engine
    from app.flux.loader import IngestOptions, ingest_file

    t = time.perf_counter()

    def progress(_foyers: int, _bytes: int) -> None:
        started.set()

    report = ingest_file(
        get_engine(settings), settings, path, IngestOptions(day, departement=dep, initial_stock=True), progress
    )
    assert report.status == "applied", report.to_dict()
    out.put((path.name, time.perf_counter() - t))


def _scenario(settings: Any, files: list[tuple[Path, str]], day: date) -> tuple[list[float], float]:
    """The files one after another's start (each once the previous one applies its first batch), at once."""
    spawn = multiprocessing.get_context("spawn")
    out = spawn.Queue()
    t = time.perf_counter()
    processes = []
    for path, dep in files:
        started = spawn.Event()
        process = spawn.Process(target=_ingest, args=(settings, path, dep, day, out, started))
        process.start()
        processes.append(process)
        started.wait(600)
    walls = dict(out.get(timeout=900) for _ in processes)
    for process in processes:
        process.join()
        assert process.exitcode == 0, process.exitcode
    return [walls[path.name] for path, _ in files], time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--big", type=int, default=20000)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--pg", default=os.environ.get("PASSERELLE_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    )
    args = parser.parse_args()
    from app.db import dispose_engines

    day = date.today() - timedelta(days=3)
    paths = _files(args.big, args.small, day)
    code = os.environ.get("PYTHONPATH", "?")
    print(f"code: {code}; {platform.node()}, {os.cpu_count()} cores; big {args.big} foyers, small {args.small}")
    for r in range(args.rounds):
        settings = _fresh(args.pg)
        (big, small), whole = _scenario(settings, [(paths["big-055"], "055"), (paths["small-093"], "093")], day)
        print(
            f"round {r + 1}: stock 055 {big:.1f} s; small file of 093 arriving meanwhile {small:.1f} s; "
            f"whole {whole:.1f} s"
        )
        dispose_engines()
        settings = _fresh(args.pg)
        (a, b), whole = _scenario(settings, [(paths["big-055"], "055"), (paths["big-093"], "093")], day)
        print(f"round {r + 1}: two stocks at once: 055 {a:.1f} s, 093 {b:.1f} s; whole {whole:.1f} s")
        dispose_engines()


if __name__ == "__main__":
    main()
