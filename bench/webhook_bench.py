"""How fast RDV-Insertion's deliveries are answered (issue #11: "within a few hundred ms"; the sender
gives up at 30 s), alone and while a monthly file is ingested.

    .venv/bin/python -m bench.webhook_bench [--db sqlite|postgres] [--deliveries 200] [--clients 4]

Builds a fresh database (a generated stock of --foyers foyers, then a daily file), serves the app with
`passerelle serve` in its own process, and sends signed deliveries (one participation each, persons found
by NIR) from --clients closed-loop clients; then the same while `passerelle flux ingest` applies a
monthly file of the same size. Prints p50 / p95 / max and the status codes."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import fresh_pg_schema, fresh_sqlite
from bench.load_bench import free_port

SECRET = "bench-secret-of-at-least-thirty-two-characters"  # noqa: S105 - a bench database only
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _delivery(n: int, nir: str, day: date) -> bytes:
    starts = f"{day.isoformat()}T10:00:00+01:00"
    payload = {
        "data": {
            "id": n,
            "starts_at": starts,
            "status": "seen",
            "motif": {"motif_category": {"short_name": "rsa_accompagnement"}},
            "organisation": {"name": "CD 55", "department_number": "55"},
            "participations": [{"id": n, "status": "seen", "starts_at": starts, "user": {"id": n, "nir": nir}}],
        },
        "meta": {"model": "Rdv", "event": "created", "timestamp": f"2024-03-07T11:05:{n % 60:02d}.{n:06d}+01:00"},
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def _send(base: str, bodies: list[bytes], clients: int) -> tuple[list[float], Counter[int]]:
    times: list[float] = []
    codes: Counter[int] = Counter()
    lock = threading.Lock()
    queue = list(bodies)

    def run() -> None:
        with httpx.Client(base_url=base, timeout=60) as http:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                sig = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                started = time.perf_counter()
                r = http.post(
                    "/api/v1/webhooks/rdv-insertion/055",
                    content=body,
                    headers={"Content-Type": "application/json", "X-RDVI-SIGNATURE": sig},
                )
                with lock:
                    times.append(time.perf_counter() - started)
                    codes[r.status_code] += 1

    threads = [threading.Thread(target=run) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return times, codes


def _figures(label: str, times: list[float], codes: Counter[int]) -> None:
    ms = sorted(t * 1000 for t in times)
    p95 = ms[int(0.95 * (len(ms) - 1))]
    print(
        f"{label}: {len(ms)} deliveries, p50 {statistics.median(ms):.0f} ms, p95 {p95:.0f} ms, "
        f"max {ms[-1]:.0f} ms, codes {dict(codes)}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--deliveries", type=int, default=200)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--foyers", type=int, default=20000)
    args = parser.parse_args()
    from app.flux.generator import generate
    from app.security.nir import nir_key  # noqa: F401 - the generator's NIRs are 13 characters

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        url = fresh_sqlite(tmp / "bench.db") if args.db == "sqlite" else fresh_pg_schema(PG_URL, "webhook_bench")
        env = {
            **os.environ,
            "PASSERELLE_ENV": "dev",
            "PASSERELLE_DATA_DIR": str(tmp / "data"),
            "PASSERELLE_DATABASE_URL": url,
            "PASSERELLE_RDV_INSERTION_SECRETS": json.dumps({"055": SECRET}),
            "PASSERELLE_LOG_LEVEL": "WARNING",
        }
        start = date.today() - timedelta(days=40)
        files = generate(tmp / "gen", args.foyers, 3, start, seed=5)
        later = generate(tmp / "later", args.foyers, 0, start + timedelta(days=30), seed=6)

        def run(*command: str) -> None:
            subprocess.run([sys.executable, "-m", "app.cli", *command], env=env, check=True, capture_output=True)

        run("db", "upgrade")
        for f in files:
            flags = ["--initial-stock"] if f.initial_stock else []
            run("flux", "ingest", str(f.path), "--received-on", f.received_on.isoformat(), *flags)
        nirs = []
        for line in (tmp / "gen" / files[0].path.name).read_text(encoding="windows-1252").split("<NIR>")[1:200]:
            nirs.append(line[:13])
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--no-migrate"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(150):
                try:
                    if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            day = start + timedelta(days=2)
            bodies = [_delivery(n, nirs[n % len(nirs)], day) for n in range(1, args.deliveries + 1)]
            _figures(f"{args.db}, {args.clients} clients", *_send(base, bodies, args.clients))
            ingest = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "flux", "ingest", str(later[0].path), "--json"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(1.0)
            more = [_delivery(n, nirs[n % len(nirs)], day) for n in range(10_001, 10_001 + args.deliveries)]
            began = time.perf_counter()
            times, codes = _send(base, more, args.clients)
            _figures(f"{args.db}, {args.clients} clients, during an ingestion", times, codes)
            print(f"ingestion exit {ingest.wait()} ({time.perf_counter() - began:.1f} s after the deliveries began)")
        finally:
            server.terminate()
            server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
