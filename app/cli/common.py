"""What every command shares: the consoles, the exit codes, errors, dates, tables that stay readable at 80
columns, and the check that the database is there and at head before a command uses it."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import typer
import typer.core
from rich.console import Console
from rich.markup import escape as escape_markup
from rich.table import Table
from rich.text import Text

from app.errors import ExitCode, PasserelleError
from app.settings import Settings, get_settings

__all__ = ["ExitCode", "PasserelleGroup", "fail"]

# soft_wrap: a line longer than the terminal is left for the terminal to wrap, never cut by rich in the
# middle of a path or a command to copy (cron mails and `less` get 80 columns).
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = ExitCode.REJECTED) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape_markup(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(int(code))


class PasserelleGroup(typer.core.TyperGroup):
    """The root command group: any `PasserelleError` a command lets escape is said in one line,
    `error: <message>`, and ends the command with its exit code (the one place the CLI maps errors).
    Each command's help ends with its example (app/cli/examples.py)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from app.cli.examples import add_examples

        add_examples(self)

    def invoke(self, ctx: Any) -> Any:  # typer's own (vendored) click.Context
        try:
            return super().invoke(ctx)
        except PasserelleError as exc:
            raise fail(exc.message, exc.exit_code) from exc
        except OSError as exc:
            if exc.filename is None:  # a file the environment did not give: the path is named, exit 3
                raise
            where = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else str(exc.filename)
            raise fail(
                f"{where}: {exc.strerror or type(exc).__name__} (check the path in the settings or on the command "
                "line, and the service user's rights there)",
                ExitCode.ENVIRONMENT,
            ) from exc
        except Exception as exc:
            reason = database_failure(exc)
            if reason is None:
                raise
            raise fail(
                f"the database failed ({reason}): what the command had committed is kept, the rest was not "
                "applied; check that the database runs (and has disk space), then run the same command again",
                ExitCode.ENVIRONMENT,
            ) from exc


def database_problem(exc: BaseException, variables: str = "PASSERELLE_DATABASE_URL") -> str:
    """One line saying why the database could not be used, told apart by what the server (or the driver)
    answered: "does not answer" only when nothing answered (refused, timed out, a host that does not resolve);
    an unknown database, a refused role or password, a SQLite file that cannot be opened, a URL whose driver is
    not installed each say so. `variables`: the settings to check, named in the line. Never the password."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    if isinstance(exc, NoSuchModuleError | ArgumentError | ModuleNotFoundError):
        return (
            f"{variables} is not a URL this service can use: "
            "sqlite:///path/to/file.db or postgresql+psycopg://user@host/database"
        )
    orig = getattr(exc, "orig", None) or exc
    text = " ".join(str(orig).split())
    lowered = text.lower()
    if match := re.search(r'database "([^"]+)" does not exist', text):
        name = match.group(1)
        return f"the database server answered that there is no database {name!r}: create it, or check {variables}"
    if match := re.search(r'role "([^"]+)" does not exist', text):
        return f"the database server refused the role {match.group(1)!r} (it does not exist): check {variables}"
    if match := re.search(r"permission denied for (schema|table|relation|sequence|function|view) (\S+)", text):
        # connected, then a statement refused: a grant missing (PostgreSQL 15 no longer lets every role create
        # in the schema public), not the role or its password
        what = f"{match.group(1)} {match.group(2)}"
        return (
            f"the database server refused this role the {what} (permission denied): grant it, or migrate with "
            f"the owner's role (PASSERELLE_MIGRATION_DATABASE_URL); {variables}"
        )
    if any(
        sign in lowered
        for sign in ("password authentication failed", "no password supplied", "pg_hba.conf", "permission denied")
    ):
        return f"the database server refused the connection (role or password): check {variables}"
    if "unable to open database file" in lowered or "readonly database" in lowered:
        return f"the SQLite database file cannot be opened or written (check its directory and rights): {variables}"
    if any(
        sign in lowered
        for sign in (
            "connection refused",
            "timeout expired",
            "timed out",
            "failed to resolve host",
            "could not translate",
            "no route to host",
            "network is unreachable",
            "name or service not known",
        )
    ):
        return f"the database server does not answer: check that it runs and that {variables} names it"
    first = (text[:160] + "…") if len(text) > 160 else text
    return f"the database could not be used ({type(orig).__name__}: {first}); check {variables} and that it runs"


def database_failure(exc: BaseException) -> str | None:
    """What the database's failure was, when `exc` is one of the environment's (a lost connection, a full disk,
    a server shutting down: SQLAlchemy's OperationalError or InterfaceError, or the driver's own when it was
    called directly); None for anything else (a bug stays a bug, exit 4). The driver's first line only:
    never the statement or its parameters."""
    import sqlite3

    import psycopg
    from sqlalchemy.exc import InterfaceError, OperationalError

    orig: BaseException = exc.orig if isinstance(exc, OperationalError | InterfaceError) else exc  # type: ignore[assignment]
    if not isinstance(exc, OperationalError | InterfaceError) and not isinstance(
        exc, sqlite3.OperationalError | sqlite3.InterfaceError | psycopg.OperationalError | psycopg.InterfaceError
    ):
        return None
    first = (str(orig).strip().splitlines() or [""])[0][:200]
    return f"{type(orig).__name__}: {first}" if first else type(orig).__name__


def parse_day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise fail(f"{option} must be a date YYYY-MM-DD, got {value!r}", ExitCode.USAGE) from None


def validated_departement(code: str) -> str:
    from app.security.auth import DEPARTEMENT_RE

    if not DEPARTEMENT_RE.match(code):
        raise fail(f"invalid département code {code!r}: 3 characters, e.g. 055, 02A, 974", ExitCode.USAGE)
    return code


def chosen_departements(departement: str | None) -> tuple[str, ...]:
    """The départements a command works on: the one given (which must be known: exit 2 naming the known
    ones), or every département configured."""
    from app.admin.departements import known_codes
    from app.db import session_scope

    with session_scope() as session:
        known = tuple(known_codes(session))
    if departement is None:
        return known
    code = validated_departement(departement)
    if code not in known:
        raise fail(f"unknown département {code!r}; known: {', '.join(known) or 'none'}", ExitCode.USAGE)
    return (code,)


def ready_settings() -> Settings:
    """The settings, once the database is known to exist, answer and be at the latest migration; otherwise
    one line saying what is wrong and the command that fixes it (exit 3), and nothing created (a SQLite
    database file is not created by looking for it)."""
    from sqlalchemy.exc import SQLAlchemyError

    from app import migrate as migrations
    from app.db import audit_journal_problem, get_engine

    settings = get_settings()
    if settings.is_sqlite:
        path = settings.sqlite_path
        if path is not None and not Path(path).exists():
            raise fail(f"no database at {path}: create it with `passerelle db upgrade`", ExitCode.ENVIRONMENT)
    try:
        engine = get_engine(settings)
        current = migrations.current_revisions(engine)
        heads = migrations.head_revisions(settings)
    except (SQLAlchemyError, ModuleNotFoundError) as exc:
        raise fail(database_problem(exc), ExitCode.ENVIRONMENT) from exc
    if current != heads:
        at = ", ".join(sorted(current)) or "empty"
        raise fail(
            f"the database is not migrated (at {at}, the code needs {', '.join(sorted(heads))}): "
            "run `passerelle db upgrade`",
            ExitCode.ENVIRONMENT,
        )
    problem = audit_journal_problem(engine)
    if problem is not None:  # never recreated here: an empty journal would hide what the lost one held
        raise fail(
            f"{problem}: restore it from its backup, then restart the service (docs/operations.md)",
            ExitCode.ENVIRONMENT,
        )
    return settings


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def print_rows(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    out: Console | None = None,
    narrow: Sequence[str] | None = None,
) -> None:
    """A table when it fits the terminal; else the table of the `narrow` columns when those fit (the others
    are in --json); else one block per row ("column: value"). Never a truncated identifier or status: cron
    mails and `less` get 80 columns."""
    out = out or console
    cells = [["-" if v is None else str(v) for v in row] for row in rows]
    for chosen in (list(columns), list(narrow or [])):
        if not chosen:
            continue
        index = [list(columns).index(c) for c in chosen]
        widths = [max([len(columns[i]), *(len(r[i]) for r in cells)]) for i in index]
        if sum(widths) + 3 * len(index) + 1 <= out.width:
            table = Table(*chosen)
            for row in cells:  # stored text shown as it is, never read as rich markup ("[/x]" crashed)
                table.add_row(*[Text(row[i]) for i in index])
            out.print(table, highlight=False)
            return
    label = max(len(c) for c in columns)
    for n, row in enumerate(cells):
        if n:
            out.print("", highlight=False)
        for name, value in zip(columns, row, strict=True):
            out.print(f"{name:>{label}}: {value}", highlight=False, markup=False)
