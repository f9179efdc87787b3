"""`passerelle`: every job a person or cron runs (server, migrations, clients, flux, pilotage, demo)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from app.settings import ConfigurationError, get_settings

app = typer.Typer(
    help="Passerelle RSA: CAF/MSA flux, orientation delays, France Travail exchanges.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
clients_app = typer.Typer(help="Machine clients and their API keys.", no_args_is_help=True)
departements_app = typer.Typer(help="Départements served by this instance.", no_args_is_help=True)
openapi_app = typer.Typer(help="The OpenAPI description of the HTTP API.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(clients_app, name="clients")
app.add_typer(departements_app, name="departements")
app.add_typer(openapi_app, name="openapi")

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


# -- server -----------------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    migrate: Annotated[bool, typer.Option(help="Apply pending migrations before serving.")] = True,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
) -> None:
    """Serve the HTTP API with uvicorn (JSON logs)."""
    import uvicorn

    from app import migrate as migrations
    from app.logging import UVICORN_LOG_CONFIG, configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    if migrate:
        migrations.upgrade(settings)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=UVICORN_LOG_CONFIG,
        proxy_headers=True,
    )


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
) -> None:
    """The main job on the embedded default (SQLite under ./data): migrate, then serve the API."""
    serve(host="127.0.0.1", port=port, migrate=True, workers=1)


# -- database ---------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default: head)."""
    from app import migrate as migrations

    migrations.upgrade(get_settings(), revision)
    console.print(f"database at {', '.join(sorted(_current())) or 'base'}")


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument()] = "-1") -> None:
    """Revert migrations down to REVISION (default: one step; `base` for all)."""
    from app import migrate as migrations

    migrations.downgrade(get_settings(), revision)
    console.print(f"database at {', '.join(sorted(_current())) or 'base'}")


def _current() -> set[str]:
    from app import migrate as migrations
    from app.db import get_engine

    return migrations.current_revisions(get_engine())


@db_app.command("current")
def db_current() -> None:
    """Show the schema's revision and whether it is at head."""
    from app import migrate as migrations

    current = _current()
    heads = migrations.head_revisions()
    state = "at head" if current == heads else f"behind head ({', '.join(sorted(heads))})"
    console.print(f"{', '.join(sorted(current)) or 'base'} ({state})")


# -- départements and clients -----------------------------------------------------------------


def _validated_departement(code: str) -> str:
    from app.security.auth import DEPARTEMENT_RE

    if not DEPARTEMENT_RE.match(code):
        raise fail(f"invalid département code {code!r}: 3 characters, e.g. 055, 02A, 974")
    return code


@departements_app.command("add")
def departements_add(code: str, name: Annotated[str | None, typer.Option()] = None) -> None:
    """Register a département (3 characters, e.g. 055)."""
    from app.db import session_scope
    from app.services.departements import ensure_departement

    with session_scope() as session:
        ensure_departement(session, _validated_departement(code), name)
    console.print(f"département {code} registered")


@departements_app.command("list")
def departements_list() -> None:
    """List the registered départements."""
    from app.db import session_scope
    from app.models import Departement

    table = Table("code", "name")
    with session_scope() as session:
        for dep in session.scalars(select(Departement).order_by(Departement.code)):
            table.add_row(dep.code, dep.name or "")
    console.print(table)


@clients_app.command("create")
def clients_create(
    name: Annotated[str, typer.Option(help="A unique, descriptive name (e.g. plateforme-orientation).")],
    departement: Annotated[list[str], typer.Option(help="Département granted (repeatable).")],
    scope: Annotated[list[str], typer.Option(help="Scope granted (repeatable).")],
) -> None:
    """Create a machine client; its API key is printed once and never stored in clear."""
    from app.db import session_scope
    from app.services.clients import ClientError, create_client

    codes = [_validated_departement(c) for c in departement]
    try:
        with session_scope() as session:
            created = create_client(session, get_settings(), name=name, departements=codes, scopes=scope)
    except ClientError as exc:
        raise fail(str(exc)) from exc
    err_console.print(f"client [bold]{name}[/] created (id {created.client_id}); its API key, shown only once:")
    print(created.key)


@clients_app.command("list")
def clients_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List machine clients (never their keys)."""
    from app.db import session_scope
    from app.models import ApiClient

    with session_scope() as session:
        rows = [
            {
                "id": c.id,
                "name": c.name,
                "key_prefix": c.key_prefix,
                "scopes": c.scopes,
                "departements": c.departement_codes,
                "created_at": c.created_at.isoformat(),
                "last_used_at": c.last_used_at.isoformat() if c.last_used_at else None,
                "revoked_at": c.revoked_at.isoformat() if c.revoked_at else None,
            }
            for c in session.scalars(select(ApiClient).order_by(ApiClient.id))
        ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("id", "name", "prefix", "départements", "scopes", "last used", "revoked")
    for r in rows:
        table.add_row(
            str(r["id"]),
            str(r["name"]),
            str(r["key_prefix"]),
            " ".join(r["departements"]),  # type: ignore[arg-type]
            " ".join(r["scopes"]),  # type: ignore[arg-type]
            str(r["last_used_at"] or "-"),
            str(r["revoked_at"] or "-"),
        )
    console.print(table)


@clients_app.command("revoke")
def clients_revoke(name_or_id: str) -> None:
    """Revoke a client's API key (immediately refused afterwards)."""
    from app.db import session_scope
    from app.services.clients import ClientError, revoke_client

    try:
        with session_scope() as session:
            revoke_client(session, name_or_id)
    except ClientError as exc:
        raise fail(str(exc)) from exc
    console.print(f"client {name_or_id} revoked")


# -- OpenAPI ----------------------------------------------------------------------------------


@openapi_app.command("export")
def openapi_export(
    out: Annotated[Path, typer.Option(help="Where to write it.")] = Path("openapi/openapi.json"),
) -> None:
    """Write the OpenAPI description generated from the app (committed; a test checks for drift)."""
    from app.openapi import render_openapi

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_openapi())
    console.print(f"wrote {out}")


def main() -> None:
    try:
        app()
    except ConfigurationError as exc:
        err_console.print(f"[bold red]configuration error:[/] {exc}")
        sys.exit(2)
