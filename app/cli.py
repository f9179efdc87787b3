"""`passerelle`: every job a person or cron runs (server, migrations, clients, flux, pilotage, demo)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated, Any

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
flux_app = typer.Typer(
    help="CAF/MSA beneficiary flux: ingest, watch an inbox, generate test files.", no_args_is_help=True
)
app.add_typer(flux_app, name="flux")
app.add_typer(db_app, name="db")
app.add_typer(clients_app, name="clients")
app.add_typer(departements_app, name="departements")
app.add_typer(openapi_app, name="openapi")

console = Console()
err_console = Console(stderr=True)


@app.callback()
def _setup() -> None:
    """Logs go to stderr (JSON lines unless PASSERELLE_LOG_JSON=false), so stdout stays for results."""
    from app.logging import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)


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
    foyers: Annotated[int, typer.Option(min=50, max=50_000, help="Foyers in the generated stock")] = 2000,
    days: Annotated[int, typer.Option(min=5, max=120, help="Days of daily files")] = 36,
    seed: Annotated[int, typer.Option(help="Same seed, same demo")] = 2024,
) -> None:
    """The main job end to end on a fresh SQLite database (DATA_DIR/demo): generate, ingest, orient, report."""
    from app.demo import run_demo

    run_demo(get_settings(), foyers=foyers, days=days, seed=seed, console=console)


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

    with session_scope(write=True) as session:
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
        with session_scope(write=True) as session:
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
        with session_scope(write=True) as session:
            revoke_client(session, name_or_id)
    except ClientError as exc:
        raise fail(str(exc)) from exc
    console.print(f"client {name_or_id} revoked")


# -- flux -------------------------------------------------------------------------------------


def _parse_day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise fail(f"{option} must be a date YYYY-MM-DD, got {value!r}", 2) from None


@flux_app.command("ingest")
def flux_ingest(
    paths: Annotated[list[Path], typer.Argument(help="Flux files (.xml or .xml.gz)", exists=True, dir_okay=False)],
    received_on: Annotated[
        str | None, typer.Option(help="Date the Département received the file(s) (default: today, Europe/Paris)")
    ] = None,
    initial_stock: Annotated[
        bool, typer.Option("--initial-stock", help="First load of the département: its persons are the stock")
    ] = False,
    departement: Annotated[str | None, typer.Option(help="Expected département (default: the file's)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the reports as JSON")] = False,
) -> None:
    """Apply flux files, each whole or not at all, then bring the entry episodes up to date.

    Exit codes: 0 every file applied (or already known); 1 a file rejected (quarantined, nothing of it
    applied); 2 a wrong option; 3 the database failed: before a file's commit nothing of that file was
    applied; after it, the message says which files were applied and what to re-run.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from app.db import get_engine
    from app.ingest.loader import IngestInputError, IngestOptions, refresh_after_commit
    from app.settings import today

    settings = get_settings()
    day = _parse_day(received_on, "--received-on") or today(settings)
    reports = []
    for path in paths:
        options = IngestOptions(
            received_on=day, initial_stock=initial_stock, departement=departement, ingested_by="cli"
        )
        try:
            reports.append(_ingest_with_progress(get_engine(settings), settings, path, options, quiet=as_json))
        except IngestInputError as exc:
            raise fail(f"{path.name}: {exc}", 2) from exc
        except SQLAlchemyError as exc:
            done = [r.filename for r in reports if r.status == "applied"]
            before = f" (applied before it: {', '.join(done)})" if done else ""
            raise fail(
                f"{path.name}: not applied, the database failed ({type(exc).__name__}); nothing of this file was "
                f"changed{before}. Re-run the same command: files already applied are recognised.",
                3,
            ) from exc
    applied = [r for r in reports if r.status == "applied"]
    if applied:  # once for all the files, recorded in the last one's report
        with _episodes_progress(quiet=as_json) as progress:
            refresh_after_commit(get_engine(settings), applied[-1], progress)
    if as_json:
        print(json.dumps([r.to_dict() for r in reports], indent=2, ensure_ascii=False, default=str))
    else:
        _print_reports(reports)
    if applied and applied[-1].episodes_error:
        raise fail(f"applied: {', '.join(r.filename for r in applied)}; {applied[-1].episodes_error}", 3)
    if any(r.status == "rejected" for r in reports):
        raise typer.Exit(1)


def _ingest_with_progress(engine: Any, settings: Any, path: Path, options: Any, quiet: bool) -> Any:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from app.ingest.loader import ingest_file

    if quiet:
        return ingest_file(engine, settings, path, options, refresh=False)
    size = path.stat().st_size
    gz = _is_gzip(path)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[foyers]} foyers"),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        # gzip: progress counts decompressed bytes; the total is then only an estimate (x8).
        task = progress.add_task(path.name, total=size * (8 if gz else 1), foyers=0)

        def advance(foyers: int, read: int) -> None:
            progress.update(task, completed=read, foyers=foyers)

        return ingest_file(engine, settings, path, options, progress=advance, refresh=False)


@contextmanager
def _episodes_progress(quiet: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar for recomputing entry episodes (none with --json)."""
    if quiet:
        yield None
        return
    from rich.progress import Progress

    with Progress(console=err_console, transient=True) as progress:
        task = progress.add_task("entry episodes", total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


def _refresh_episodes(quiet: bool = False) -> int:
    """Recompute the entry episodes of every queued person."""
    from app.db import get_engine
    from app.services.episodes import refresh_pending

    with _episodes_progress(quiet) as progress:
        return refresh_pending(get_engine(), progress)


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _print_reports(reports: list[Any]) -> None:
    table = Table("file", "status", "dép.", "type", "foyers", "persons", "new", "changes", "absences", "warn.", "rej.")
    for r in reports:
        style = {"applied": "green", "duplicate": "yellow", "rejected": "red"}[r.status]
        table.add_row(
            r.filename,
            f"[{style}]{r.status}[/]",
            r.departement or "-",
            r.type_flux or "-",
            str(r.foyers),
            str(r.persons_brsa),
            str(r.new_persons),
            str(r.state_changes),
            str(r.absences),
            str(r.warnings_count),
            str(r.rejected_count),
        )
    console.print(table)
    for r in reports:
        if r.status == "rejected":
            where = f" at {r.error_position}" if r.error_position else ""
            err_console.print(f"[red]{r.filename}: rejected{where}: {r.error}[/] (quarantined: {r.quarantine_path})")
        elif r.status == "duplicate":
            err_console.print(f"[yellow]{r.filename}: already ingested (file #{r.duplicate_of}); nothing changed[/]")
        if r.later_files:
            err_console.print(
                f"{r.filename}: dated before {r.later_files} file(s) already applied: what they said of "
                f"{r.reexamined} person(s) was re-examined with this file in its place"
            )
        for item in (r.rejected or [])[:10]:
            err_console.print(f"  rejected record: {item['message']}")
        for item in (r.warnings or [])[:10]:
            err_console.print(f"  warning: {item['message']}")
        hidden = max(0, r.warnings_count - 10) + max(0, r.rejected_count - 10)
        if hidden:
            err_console.print(f"  … and {hidden} more in the report (passerelle flux show {r.file_id})")


@flux_app.command("list")
def flux_list(
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 30,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The latest received files."""
    from app.db import session_scope
    from app.models import FluxFile

    with session_scope() as session:
        rows = [
            {
                "id": f.id,
                "departement": f.departement_code,
                "filename": f.filename,
                "status": f.status,
                "type_flux": f.type_flux,
                "received_on": f.received_on.isoformat(),
                "foyers": f.foyers,
                "persons": f.persons,
                "warnings": f.warnings,
                "rejected_records": f.rejected_records,
                "error": f.error,
            }
            for f in session.scalars(select(FluxFile).order_by(FluxFile.id.desc()).limit(limit))
        ]
    if as_json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table("id", "dép.", "file", "status", "type", "received", "foyers", "persons", "warn.", "rej.")
    for r in rows:
        table.add_row(*[str(r[k] if r[k] is not None else "-") for k in list(r)[:10]])
    console.print(table)


@flux_app.command("show")
def flux_show(file_id: int) -> None:
    """One file's full ingestion report (JSON)."""
    from app.db import session_scope
    from app.models import FluxFile

    with session_scope() as session:
        row = session.get(FluxFile, file_id)
        if row is None:
            raise fail(f"no flux file #{file_id}")
        print(json.dumps(row.report, indent=2, ensure_ascii=False, default=str))


@flux_app.command("watch")
def flux_watch(
    inbox: Annotated[Path, typer.Argument(help="Directory where flux files are dropped", file_okay=False)],
    interval: Annotated[float, typer.Option(help="Seconds between two looks")] = 10.0,
    once: Annotated[bool, typer.Option("--once", help="Process what is there, then stop")] = False,
    departement: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Ingest files dropped in INBOX; move each to INBOX/processed or INBOX/quarantine.

    The reception date is the day the file landed in the inbox (its modification time, Europe/Paris).
    A file still being written (size changing) is left for the next look.
    """
    import time

    from app.db import get_engine
    from app.ingest.watch import process_inbox

    settings = get_settings()
    inbox.mkdir(parents=True, exist_ok=True)
    while True:
        for outcome in process_inbox(get_engine(settings), settings, inbox, departement):
            style = {"applied": "green", "duplicate": "yellow", "rejected": "red", "error": "red"}[outcome.status]
            console.print(f"[{style}]{outcome.status}[/] {outcome.name} -> {outcome.moved_to}")
        if once:
            return
        time.sleep(interval)


@flux_app.command("generate")
def flux_generate(
    out: Annotated[Path, typer.Option(help="Output directory", file_okay=False)],
    foyers: Annotated[int, typer.Option(min=1, help="Foyers in the initial stock")] = 2000,
    days: Annotated[int, typer.Option(min=0, help="Days of daily files after the stock")] = 30,
    start: Annotated[str, typer.Option(help="Date of the stock file")] = "2024-03-01",
    seed: Annotated[int, typer.Option(help="Same seed, same files")] = 1,
    departement: Annotated[str, typer.Option()] = "055",
    gzip_files: Annotated[bool, typer.Option("--gzip", help="Write .xml.gz files")] = False,
) -> None:
    """Write realistic, fictitious flux files (stock, then daily files) and a manifest.json."""
    from app.ingest.generator import generate

    start_day = _parse_day(start, "--start")
    assert start_day is not None
    files = generate(out, foyers, days, start_day, seed, _validated_departement(departement), gzip_files)
    console.print(f"wrote {len(files)} files ({sum(f.foyers for f in files)} foyers) and manifest.json to {out}")


# -- orientation, episodes, pilotage ----------------------------------------------------------

orientations_app = typer.Typer(help="Orientation events sent by the platform (bulk import).", no_args_is_help=True)
episodes_app = typer.Typer(help="Entry episodes (nouveaux entrants) derived from the facts.", no_args_is_help=True)
pilotage_app = typer.Typer(help="Pilotage indicators.", no_args_is_help=True)
app.add_typer(orientations_app, name="orientations")
app.add_typer(episodes_app, name="episodes")
app.add_typer(pilotage_app, name="pilotage")


@orientations_app.command("import")
def orientations_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="; separated UTF-8 CSV with a header")],
    departement: Annotated[str | None, typer.Option(help="Département (default: the only one registered)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Import orientation events (reprise de stock, platform exports). Valid rows are applied in one
    transaction; rejected rows are listed with their line and reason (exit code 1 if any)."""
    from app.db import session_scope
    from app.errors import ApiError
    from app.models import Departement
    from app.services.orientation import import_csv

    try:
        data = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise fail(f"{file.name} is not UTF-8 (byte {exc.start})", 2) from exc
    settings = get_settings()
    try:
        with session_scope(write=True) as session:
            if departement is None:
                codes = session.scalars(select(Departement.code)).all()
                if len(codes) != 1:
                    raise fail("several départements are registered: give --departement", 2)
                departement = codes[0]
            report = import_csv(session, settings, _validated_departement(departement), data, recorded_by="cli")
    except ApiError as exc:
        raise fail(f"{file.name}: {exc.message}", 2) from exc
    if as_json:
        print(json.dumps(report.__dict__, indent=2, ensure_ascii=False))
    else:
        console.print(
            f"{report.rows} rows: {report.applied} applied, {report.already_known} already known, "
            f"{len(report.rejected)} rejected"
        )
        for item in report.rejected[:50]:
            err_console.print(f"  line {item['line']}: {item['reason']}")
    if report.rejected:
        raise typer.Exit(1)


@episodes_app.command("refresh")
def episodes_refresh() -> None:
    """Recompute the entry episodes of persons whose facts changed (each ingestion does it after its commit;
    run it if one reported that this failed)."""
    n = _refresh_episodes()
    console.print(f"{n} persons recomputed")


@pilotage_app.command("orientation")
def pilotage_orientation(
    start: Annotated[str, typer.Option("--from", help="First T0 day (YYYY-MM-DD)")],
    end: Annotated[str, typer.Option("--to", help="Last T0 day (YYYY-MM-DD)")],
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Count facts dated on or before (default: today)")
    ] = None,
    departement: Annotated[list[str] | None, typer.Option(help="Département(s) (default: all)")] = None,
    output: Annotated[str, typer.Option("--format", help="json, csv or table")] = "table",
) -> None:
    """Nouveaux entrants and their orientation within 15 days / one month (annex 4, indicators 1 and 2)."""
    from app.db import get_engine
    from app.models import Departement
    from app.pilotage.orientation import FLAT_KEYS, orientation_indicator
    from app.services.episodes import pending_count
    from app.settings import today

    if output not in ("json", "csv", "table"):
        raise fail("--format is json, csv or table", 2)
    day_from, day_to = _parse_day(start, "--from"), _parse_day(end, "--to")
    assert day_from is not None and day_to is not None
    if day_to < day_from:
        raise fail("--to is before --from", 2)
    settings = get_settings()
    day = _parse_day(as_of, "--as-of") or today(settings)
    engine = get_engine(settings)
    with engine.connect() as conn:
        deps = departement or list(conn.execute(select(Departement.code).order_by(Departement.code)).scalars())
    with engine.connect() as conn:
        result = orientation_indicator(conn, deps, day_from, day_to, day)
        pending = pending_count(conn)
    if pending:
        err_console.print(
            f"[yellow]warning:[/] {pending} person(s) wait for their entry episodes to be recomputed "
            "(a refresh failed or runs now): run `passerelle episodes refresh` for exact figures"
        )
    if output == "json":
        print(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    elif output == "csv":
        print(";".join(["from", "to", "as_of", *FLAT_KEYS]))
        print(";".join(str(result[k]) for k in ("from", "to", "as_of", *FLAT_KEYS)))
    else:
        from app.pilotage.display import print_indicator

        print_indicator(result, console)


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


if __name__ == "__main__":
    main()
