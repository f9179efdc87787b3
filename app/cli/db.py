"""`passerelle db`: the database schema (Alembic migrations)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from app.cli.common import ExitCode, console, fail, print_json
from app.settings import get_settings

db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)


def _current() -> set[str]:
    from app import migrate as migrations
    from app.db import get_engine

    return migrations.current_revisions(get_engine())


def _unreachable(exc: Exception) -> typer.Exit:
    return fail(
        f"the database does not answer ({type(exc).__name__}); check PASSERELLE_DATABASE_URL and that it runs",
        ExitCode.ENVIRONMENT,
    )


def _migrate(step: Callable[..., None], revision: str) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        step(get_settings(), revision)
        console.print(f"database at {', '.join(sorted(_current())) or 'base'}")
    except SQLAlchemyError as exc:
        raise _unreachable(exc) from exc


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default: head); creates a SQLite database if there is none."""
    from app import migrate as migrations

    _migrate(migrations.upgrade, revision)


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument()] = "-1") -> None:
    """Revert migrations down to REVISION (default: one step; `base` for all)."""
    from app import migrate as migrations

    _migrate(migrations.downgrade, revision)


@db_app.command("current")
def db_current(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show the schema's revision and whether it is at head (exit 3 when it is not)."""
    from sqlalchemy.exc import SQLAlchemyError

    from app import migrate as migrations

    settings = get_settings()
    path = settings.sqlite_path
    try:
        current = set() if path is not None and not path.exists() else _current()
    except SQLAlchemyError as exc:
        raise _unreachable(exc) from exc
    heads = migrations.head_revisions()
    if as_json:
        print_json({"current": sorted(current), "head": sorted(heads), "at_head": current == heads})
    else:
        state = (
            "at head" if current == heads else f"behind head ({', '.join(sorted(heads))}): run `passerelle db upgrade`"
        )
        console.print(f"{', '.join(sorted(current)) or 'empty'} ({state})")
    if current != heads:
        raise typer.Exit(int(ExitCode.ENVIRONMENT))
