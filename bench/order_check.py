"""Ingests one generated flux in three orders (reception, newest first, shuffled; the initial stock always
first) and says whether the stored facts, episodes and indicator are the same.

    .venv/bin/python bench/order_check.py --foyers 2000 --days 90 [--db sqlite|postgres]

Prints each order's ingestion time and the first differences found (exit 1 if any)."""

from __future__ import annotations

import argparse
import base64
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import migrate
from app.db import dispose_engines
from app.flux.generator import generate
from app.settings import Settings
from bench.common import fresh_pg_schema, fresh_sqlite
from tests.support.orderproof import ingest_all, orders, snapshot

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--foyers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    start = date(2024, 1, 2)
    with tempfile.TemporaryDirectory() as tmp:
        files = generate(Path(tmp) / "gen", args.foyers, args.days, start, seed=args.seed)
        end = start + timedelta(days=args.days)
        snaps = {}
        for name, order in orders(files).items():
            url = (
                fresh_sqlite(Path(tmp) / f"{name}.db")
                if args.db == "sqlite"
                else fresh_pg_schema(PG_URL, f"order_{name}")
            )
            settings = Settings(
                env="test",
                database_url=url,
                data_dir=Path(tmp) / f"data_{name}",
                nir_encryption_keys="k1:" + base64.b64encode(b"k" * 32).decode(),
                nir_hmac_key=base64.b64encode(b"h" * 32).decode(),  # the same keys in every order
            )
            migrate.upgrade(settings)
            began = time.perf_counter()
            ingest_all(settings, order)
            print(f"{name:13} {len(order)} files ingested in {time.perf_counter() - began:.1f} s", flush=True)
            snaps[name] = snapshot(settings, "055", start, end, end)
            dispose_engines()
        reference = snaps["reception"]
        print(
            f"reference: {len(reference.persons)} persons, {sum(map(len, reference.facts.values()))} facts, "
            f"{sum(map(len, reference.episodes.values()))} episodes, "
            f"{reference.indicator['nouveaux_entrants']} nouveaux entrants"
        )
        failed = False
        for name, snap in snaps.items():
            if name == "reception":
                continue
            diff = reference.differences(snap, limit=8)
            print(f"{name}: {'same' if not diff else f'{len(diff)}+ differences'}")
            for d in diff:
                print("  " + d.replace("\n", "\n  "))
            failed |= bool(diff)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
