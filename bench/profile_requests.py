"""Profile one kind of request in-process (issue #27, item 1): a person read, a worklist page, a search, an
event post, against the load benchmark's database (`bench.load_bench`'s files and setup).

    .venv/bin/python -m bench.profile_requests --db sqlite --kind person [--requests 500] [--flat] [--cprofile]

The application (`create_app`, its lifespan started) is called directly as ASGI, one request after the
other, with the thread pool's calls made inline (`anyio.to_thread.run_sync` runs the function in the event
loop's thread): the whole of a request then runs in one thread, which pyinstrument (or cProfile) samples.
What this leaves out: uvicorn's HTTP parsing and the hop to a thread (the load benchmark measures those).
Prints the CPU time per request of that thread, then the profile (`--flat`: the functions by own time).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import random
import time
from datetime import date
from typing import Any

import anyio.to_thread

from bench.common import drop_pg_schema
from bench.load_bench import PG_BASE, make_files, pg_schema, prepare_database


async def _inline(func: Any, *args: Any, **_kw: Any) -> Any:
    return func(*args)


def request_of(kind: str, rng: random.Random, data: dict[str, Any], seq: int) -> tuple[str, str, str, bytes]:
    """(method, path, query string, JSON body) of one request of `kind`."""
    if kind == "worklist":
        return "GET", "/api/v1/worklist", f"limit=50&offset={rng.randrange(0, 500, 50)}", b""
    if kind == "person":
        return "GET", f"/api/v1/persons/{rng.choice(data['persons'])}", "", b""
    if kind == "search":
        numorg, matricule, role = rng.choice(data["keys"])
        body = {"fonorg": "CAF", "numorg": numorg, "matricule": matricule, "role": role}
        return "POST", "/api/v1/persons/search", "", json.dumps(body).encode()
    body = {"type": "invitation", "date": date.today().isoformat(), "external_id": f"profile-{seq}-{time.time()}"}
    return "POST", f"/api/v1/persons/{rng.choice(data['waiting'])}/events", "", json.dumps(body).encode()


async def call(app: Any, key: str, method: str, path: str, query: str, body: bytes) -> int:
    headers = [(b"host", b"127.0.0.1:8000"), (b"x-api-key", key.encode()), (b"user-agent", b"profile")]
    if body:
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--kind",
        choices=("person", "worklist", "search", "event"),
        action="append",
        help="the kind of request (repeat it for several, each after the other)",
    )
    parser.add_argument("--foyers", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--flat", action="store_true", help="functions by their own time, not the call tree")
    parser.add_argument("--cprofile", action="store_true", help="cProfile (deterministic) instead of pyinstrument")
    parser.add_argument("--lines", type=int, default=40)
    parser.add_argument("--no-profile", action="store_true", help="only the CPU time per request, no profiler")
    args = parser.parse_args()

    env, data = prepare_database(args.db, make_files(args.foyers), 1)
    os.environ.update({k: v for k, v in env.items() if k.startswith("PASSERELLE_")})
    os.environ["PASSERELLE_RATE_LIMIT_PER_MINUTE"] = "0"  # one key, as fast as it goes
    from app.main import create_app
    from app.settings import get_settings

    get_settings.cache_clear()
    anyio.to_thread.run_sync = _inline  # type: ignore[assignment]
    app = create_app()
    key = data["api_keys"][0]
    rng = random.Random(1)

    async def run() -> None:
        async with app.router.lifespan_context(app):
            for kind in args.kind or ["person"]:
                await run_kind(kind)

    async def run_kind(kind: str) -> None:
        for seq in range(50):  # warm up: imports, caches, the pool's connections
            status = await call(app, key, *request_of(kind, rng, data, seq))
            assert status < 300, status
        statuses: list[int] = []
        profiler: Any
        if args.no_profile:
            profiler = None
        elif args.cprofile:
            profiler = cProfile.Profile()
            profiler.enable()
        else:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0002, async_mode="disabled")
            profiler.start()
        cpu = time.thread_time()
        for seq in range(args.requests):
            statuses.append(await call(app, key, *request_of(kind, rng, data, 1000 + seq)))
        cpu = time.thread_time() - cpu
        if profiler is None:
            text = ""
        elif args.cprofile:
            profiler.disable()
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats("tottime" if args.flat else "cumulative").print_stats(args.lines)
            text = out.getvalue()
        else:
            profiler.stop()
            text = profiler.output_text(flat=args.flat, show_all=False)
            text = "\n".join(text.splitlines()[: args.lines + 8])
        bad = [s for s in statuses if s >= 300]
        note = "" if profiler is None else " (profiler running)"
        print(f"\n{args.db}, {kind}: {args.requests} requests, {len(bad)} not 2xx; CPU of the thread "
              f"{cpu * 1000 / args.requests:.2f} ms per request{note}")  # fmt: skip
        print(text)

    try:
        asyncio.run(run())
    finally:
        if args.db == "postgres":
            drop_pg_schema(PG_BASE, pg_schema())


if __name__ == "__main__":
    main()
