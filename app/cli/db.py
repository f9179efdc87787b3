"""`passerelle db`: the database schema (Alembic migrations)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from app.cli.common import ExitCode, console, database_problem, fail, print_json
from app.settings import get_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True, rich_markup_mode=None)


def _current() -> set[str]:
    from app import migrate as migrations
    from app.db import get_engine

    return migrations.current_revisions(get_engine())


def _unreachable(exc: Exception) -> typer.Exit:
    settings = get_settings()
    variables = "PASSERELLE_MIGRATION_DATABASE_URL" if settings.migration_database_url else "PASSERELLE_DATABASE_URL"
    return fail(database_problem(exc, variables), ExitCode.ENVIRONMENT)


def _migrate(step: Callable[..., None], revision: str) -> None:
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from app import migrate as migrations
    from app.db import audit_journal_problem, make_engine

    settings = get_settings()
    try:
        try:
            step(settings, revision)
        except CommandError as exc:  # an unknown or ambiguous revision: the caller's mistake, said in one line
            raise fail(f"revision {revision!r}: {exc}", ExitCode.USAGE) from None
        engine = make_engine(settings.migrations_url, settings, statement_timeout=False, pooled=False)
        try:
            role = migrations.service_role(settings)
            if role is not None:  # the migrations' role owns the tables: the service's gets what it needs
                _grant(engine, role)
            console.print(f"database at {', '.join(sorted(migrations.current_revisions(engine))) or 'base'}")
            problem = audit_journal_problem(engine) if migrations.at_head(engine, settings) else None
        finally:
            engine.dispose()
    except (SQLAlchemyError, ModuleNotFoundError) as exc:
        raise _unreachable(exc) from exc
    if problem is not None:  # a migration never recreates a lost journal's tables: it would hide the loss
        raise fail(f"{problem}: restore it from its backup (docs/operations.md)", ExitCode.ENVIRONMENT)


def _grant(engine: Engine, role: str) -> None:
    from app import migrate as migrations

    try:
        migrations.grant_service_role(engine, role)
    except ValueError as exc:
        raise fail(f"db grant: {exc}", ExitCode.ENVIRONMENT) from None
    console.print(f"role {role}: rows read and written, audit events written and sealed only (docs/operations.md)")


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument()] = "head",
    create_dirs: Annotated[
        bool,
        typer.Option(
            "--create-dirs",
            help="SQLite: create the database file's missing directories (by default only PASSERELLE_DATA_DIR is).",
        ),
    ] = False,
) -> None:
    """Apply migrations up to REVISION (default: head); creates a SQLite database if there is none, in a
    directory that exists (a mistyped path is refused, naming the missing directory, unless --create-dirs)."""
    from app import migrate as migrations

    _refuse_missing_directory(create_dirs)
    _migrate(migrations.upgrade, revision)


def _refuse_missing_directory(create_dirs: bool) -> None:
    settings = get_settings()
    path = settings.sqlite_path
    if path is None or create_dirs or path.parent.exists():
        return
    if path.parent.resolve() == settings.data_dir.resolve():  # the data directory: the service's own to create
        return
    raise fail(
        f"the directory {path.parent} of the SQLite database (PASSERELLE_DATABASE_URL) does not exist: check the "
        "path, or create it with `passerelle db upgrade --create-dirs`",
        ExitCode.ENVIRONMENT,
    )


@db_app.command("grant")
def db_grant(
    role: Annotated[
        str | None,
        typer.Option(help="The service's PostgreSQL role (default: the user of PASSERELLE_DATABASE_URL)."),
    ] = None,
) -> None:
    """PostgreSQL: grant the service's role what it needs and nothing more, connected as the migrations' role
    (PASSERELLE_MIGRATION_DATABASE_URL), which owns the tables: rows read and written, audit events written,
    sealed and purged only; never TRUNCATE, ALTER, DROP or a trigger disabled. `db upgrade` does it itself when
    the two URLs name different users. Exit 3 when refused (the role owns tables, is a superuser...)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from app.db import make_engine

    settings = get_settings()
    if settings.is_sqlite:
        raise fail("db grant: roles and grants are PostgreSQL's: SQLite has none", ExitCode.USAGE)
    role = role or make_url(settings.database_url).username
    if not role:
        raise fail("db grant: name the service's role (--role): PASSERELLE_DATABASE_URL has no user", ExitCode.USAGE)
    engine = make_engine(settings.migrations_url, settings, statement_timeout=False, pooled=False)
    try:
        _grant(engine, role)
    except (SQLAlchemyError, ModuleNotFoundError) as exc:
        raise _unreachable(exc) from exc
    finally:
        engine.dispose()


@db_app.command("downgrade", context_settings={"ignore_unknown_options": True})
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
    except (SQLAlchemyError, ModuleNotFoundError) as exc:
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
