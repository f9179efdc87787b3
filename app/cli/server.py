"""`passerelle serve`, `demo` and `openapi`: running the service and describing it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli.common import console, ready_settings
from app.settings import get_settings

openapi_app = typer.Typer(help="The OpenAPI description of the HTTP API.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(demo)
    app.add_typer(openapi_app, name="openapi")


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    migrate: Annotated[bool, typer.Option(help="Apply pending migrations before serving.")] = True,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
) -> None:
    """Serve the HTTP API with uvicorn (JSON logs). Without --migrate, the database must be at head."""
    import uvicorn

    from app import migrate as migrations
    from app.logging import UVICORN_LOG_CONFIG, configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    if migrate:
        migrations.upgrade(settings)
    else:
        ready_settings()
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=UVICORN_LOG_CONFIG,
        proxy_headers=True,
    )


def demo(
    foyers: Annotated[int, typer.Option(min=50, max=50_000, help="Foyers in the generated stock")] = 2000,
    days: Annotated[int, typer.Option(min=5, max=120, help="Days of daily files")] = 36,
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
    from app.openapi import render_openapi

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_openapi())
    console.print(f"wrote {out}")
