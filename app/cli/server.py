"""`passerelle serve`, `demo` and `openapi`: running the service and describing it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli.common import ExitCode, console, fail, ready_settings
from app.settings import Settings, get_settings

openapi_app = typer.Typer(help="The OpenAPI description of the HTTP API.", no_args_is_help=True, rich_markup_mode=None)
fake_ft_app = typer.Typer(
    help="A fake France Travail for tests and demos (never the real one).", no_args_is_help=True, rich_markup_mode=None
)


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(demo)
    app.add_typer(openapi_app, name="openapi")
    app.add_typer(fake_ft_app, name="fake-ft")


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    migrate: Annotated[bool, typer.Option(help="Apply pending migrations before serving.")] = True,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
) -> None:
    """Serve the HTTP API with uvicorn (logs: JSON lines, human ones at a terminal). --migrate applies
    migrations as `db upgrade` does (with PASSERELLE_MIGRATION_DATABASE_URL when set); with --no-migrate the
    database must be at head."""
    import uvicorn

    from app.api.http_protocol import JsonErrorsHttpToolsProtocol
    from app.logging import UVICORN_LOG_CONFIG, configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    _refuse_taken_port(host, port)  # before migrating: one line, not uvicorn's log lines after the work
    if workers > 1 and settings.redis_url is None:  # issue #27, item 4: docs/operations.md "Several processes"
        _warn_unshared(settings, workers)
    if migrate:  # with the migrations' own role when one is set, which then grants the service's
        from app.cli.db import db_upgrade

        db_upgrade("head")
    else:
        ready_settings()
    if settings.sqlite_path is not None:  # `passerelle demo` will not delete it under us (app.db)
        from app.db import hold_serving_lock

        hold_serving_lock(settings.sqlite_path)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=UVICORN_LOG_CONFIG,
        proxy_headers=True,
        # X-Forwarded-For and -Proto believed from PASSERELLE_TRUSTED_PROXIES only (uvicorn's default trusts
        # 127.0.0.1 and ::1: any local process could choose the address the audit records; issue #23)
        forwarded_allow_ips=[str(network) for network in settings.trusted_networks],
        http=JsonErrorsHttpToolsProtocol,  # a request uvicorn cannot parse gets our JSON error, not its text
        loop="uvloop",  # with httptools, uvicorn[standard]'s choice: the event loop in C (issue #27)
    )


def _warn_unshared(settings: Settings, workers: int) -> None:
    """What N workers without a Redis do not share, said once at start."""
    import structlog

    from app.security.shared_limits import in_database

    alone = "France Travail's token and rate cap" + ("" if in_database(settings) else " and the rate limits")
    structlog.get_logger("app.cli.server").warning(
        "rate_limits_per_process" if not in_database(settings) else "france_travail_token_per_process",
        workers=workers,
        message=f"each of the {workers} workers keeps {alone} alone (a client may make up to {workers} times its "
        "budget if the rate limits are among them): set PASSERELLE_REDIS_URL to share them",
    )


def _refuse_taken_port(host: str, port: int) -> None:
    """One line (exit 3) when the address cannot be listened on: taken by another process, not ours to take
    (a port under 1024), or an interface this machine does not have. Bound as uvicorn will (SO_REUSEADDR)."""
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise fail(f"--host {host}: not an address or name of this machine", ExitCode.USAGE) from None
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                reason = "is already in use (another server?): stop it, or choose another with --port"
            elif exc.errno == errno.EACCES:
                reason = "is not allowed to this user (ports under 1024): choose another with --port"
            else:
                reason = f"cannot be listened on ({exc.strerror}): check --host and --port"
            raise fail(f"port {port} on {host} {reason}", ExitCode.ENVIRONMENT) from None


def demo(
    foyers: Annotated[int, typer.Option(min=50, max=50_000, help="Foyers in the generated stock")] = 2000,
    days: Annotated[int, typer.Option(min=5, max=120, help="Days of daily files")] = 56,
    seed: Annotated[int, typer.Option(help="Same seed, same demo")] = 2024,
) -> None:
    """The main job end to end on a fresh SQLite database (DATA_DIR/demo): generate, ingest, orient, report."""
    from app.demo import run_demo

    run_demo(get_settings(), foyers=foyers, days=days, seed=seed, console=console)


@openapi_app.command("export")
def openapi_export(
    out: Annotated[Path, typer.Option(help="Where to write it.")] = Path("openapi/openapi.json"),
) -> None:
    """Write the OpenAPI description generated from the app (committed; a test checks for drift)."""
    from app.main import render_openapi

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_openapi())
    console.print(f"wrote {out}")


@fake_ft_app.command("serve")
def fake_ft_serve(
    port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1.")] = 8900,
    seed: Annotated[int, typer.Option(help="Same seed, same population (which NIR is known, unknown...)")] = 1,
    client_id: Annotated[str, typer.Option(help="The client id its token endpoint accepts.")] = "passerelle-fake",
    client_secret: Annotated[str, typer.Option(help="The client secret it accepts.")] = "fake-secret",  # noqa: S107
    latency_ms: Annotated[int, typer.Option(help="Latency added to every API call.")] = 0,
) -> None:
    """Serve the fake France Travail on loopback: token endpoint, Rechercher usager v2, contrat-usager v2,
    diagnostic argumenté v4, orientation usager v1; faults settable at runtime (POST /_fake/faults), call
    counts at GET /_fake/stats. See app/france_travail/fake."""
    import uvicorn

    from app.france_travail.fake import FakeState, Faults, create_app

    state = FakeState(seed=seed, client_id=client_id, client_secret=client_secret, faults=Faults(latency_ms=latency_ms))
    console.print(f"fake France Travail on http://127.0.0.1:{port} (API base /partenaire, seed {seed})")
    uvicorn.run(create_app(state), host="127.0.0.1", port=port, log_level="warning")
