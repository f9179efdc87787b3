"""Ingest one flux file into a fresh database and print JSON figures (run as a subprocess by ingest_bench)."""

from __future__ import annotations

import json
import resource
import sys
import time
from datetime import date
from pathlib import Path

from app import migrate
from app.db import get_engine
from app.flux.loader import IngestOptions, ingest_file
from app.settings import Settings


def peak_rss_mb() -> float:
    """This process's own peak (VmHWM). ru_maxrss would include the parent's peak before exec()."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    url, path, data_dir = args[0], Path(args[1]), Path(args[2])
    received = date.fromisoformat(args[3]) if len(args) > 3 else date(2024, 3, 1)
    initial = "--initial-stock" in sys.argv
    settings = Settings(env="test", database_url=url, data_dir=data_dir)
    if "--no-migrate" not in sys.argv:
        migrate.upgrade(settings)
    engine = get_engine(settings)
    started = time.perf_counter()
    report = ingest_file(engine, settings, path, IngestOptions(received_on=received, initial_stock=initial))
    elapsed = time.perf_counter() - started
    print(
        json.dumps(
            {
                "status": report.status,
                "seconds": round(elapsed, 2),
                "foyers": report.foyers,
                "persons_read": report.persons_read,
                "persons_brsa": report.persons_brsa,
                "state_changes": report.state_changes,
                "unchanged": report.unchanged,
                "peak_rss_mb": peak_rss_mb(),
                # the child process that reads big files (its own peak; the two peaks may not coincide)
                "reader_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
                "error": report.error,
                # included in `seconds`: the entry episodes brought up to date after the commit (issue #8)
                "episodes_s": round((report.episodes_ms or 0) / 1000, 2),
                "episodes_refreshed": report.episodes_refreshed,
            }
        )
    )


if __name__ == "__main__":
    main()
