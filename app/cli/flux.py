"""`passerelle flux`: CAF/MSA flux files — ingest, watch an inbox, list, show, generate test files."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape as escape_markup

from app.cli.common import (
    ExitCode,
    chosen_departements,
    console,
    err_console,
    fail,
    parse_day,
    print_json,
    print_rows,
    ready_settings,
    validated_departement,
)

flux_app = typer.Typer(
    help="CAF/MSA flux (beneficiary and instruction): ingest, watch an inbox, list, generate test files.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


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
    from app.flux.pipeline import open_early  # light: the first file's reading starts before the imports below
    from app.settings import get_settings

    day_given = parse_day(received_on, "--received-on")
    if departement is not None:
        validated_departement(departement)
    early = open_early(get_settings(), paths[0]) if paths else None
    try:
        _flux_ingest(paths, day_given, initial_stock, departement, as_json, early)
    finally:
        if early is not None:
            early.close()


def _flux_ingest(
    paths: list[Path], day_given: Any, initial_stock: bool, departement: str | None, as_json: bool, early: Any
) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from app.clock import today
    from app.db import get_engine
    from app.flux.loader import IngestInputError, IngestOptions, refresh_after_commit

    settings = ready_settings()
    day = day_given or today(settings)
    reports = []
    for path in paths:
        options = IngestOptions(
            received_on=day, initial_stock=initial_stock, departement=departement, ingested_by="cli"
        )
        try:
            source, early = early, None  # the first file's, opened before the imports
            reports.append(_ingest_with_progress(get_engine(settings), settings, path, options, as_json, source))
        except IngestInputError as exc:
            raise fail(f"{path.name}: {exc}", ExitCode.USAGE) from exc
        except SQLAlchemyError as exc:
            done = [r.filename for r in reports if r.status == "applied"]
            before = f" (applied before it: {', '.join(done)})" if done else ""
            raise fail(
                f"{path.name}: not applied, the database failed ({type(exc).__name__}); nothing of this file was "
                f"changed{before}. Re-run the same command: files already applied are recognised.",
                ExitCode.ENVIRONMENT,
            ) from exc
    applied = [r for r in reports if r.status == "applied"]
    # once for all the files, recorded in the last one's report; after a duplicate too: a run killed after
    # the file's commit left its persons queued, and running the same command again must finish its work
    refreshed = applied or [r for r in reports if r.status == "duplicate"]
    if refreshed:
        with _episodes_progress(quiet=as_json) as progress:
            refresh_after_commit(get_engine(settings), refreshed[-1], progress)
    if as_json:
        print_json([r.to_dict() for r in reports])
    else:
        _print_reports(reports)
    if refreshed and refreshed[-1].episodes_error:
        names = ", ".join(r.filename for r in applied) or "none (already applied)"
        raise fail(f"applied: {names}; {refreshed[-1].episodes_error}", ExitCode.ENVIRONMENT)
    if any(r.status == "rejected" for r in reports):
        raise typer.Exit(int(ExitCode.REJECTED))


def _ingest_with_progress(engine: Any, settings: Any, path: Path, options: Any, quiet: bool, source: Any = None) -> Any:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from app.flux.loader import ingest_file

    if quiet:
        return ingest_file(engine, settings, path, options, refresh=False, source=source)
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

        return ingest_file(engine, settings, path, options, progress=advance, refresh=False, source=source)


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


def refresh_episodes(quiet: bool = False) -> int:
    """Recompute the entry episodes of every queued person."""
    from app.db import get_engine
    from app.orientation.episodes import refresh_pending

    with _episodes_progress(quiet) as progress:
        return refresh_pending(get_engine(), progress)


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _print_reports(reports: list[Any]) -> None:
    print_rows(
        ("file", "status", "dép.", "type", "foyers", "persons", "new", "changes", "absences", "warn.", "rej."),
        [
            (
                r.filename,
                r.status,
                r.departement,
                r.type_flux,
                r.foyers,
                r.persons_brsa,
                r.new_persons,
                r.state_changes,
                r.absences,
                r.warnings_count,
                r.rejected_count,
            )
            for r in reports
        ],
        narrow=("file", "status", "type", "persons", "changes", "rej."),
    )
    for r in reports:
        if r.status == "rejected":
            where = f" at {r.error_position}" if r.error_position else ""
            err_console.print(
                f"[red]{r.filename}: rejected{where}: {r.error}[/] (quarantined: {r.quarantine_path})", highlight=False
            )
        elif r.status == "duplicate":
            err_console.print(
                f"[yellow]{escape_markup(r.filename)}: already ingested (file #{r.duplicate_of}); nothing changed[/]"
            )
        if r.nature == "I" and r.status == "applied":
            err_console.print(
                f"{r.filename}: an instruction flux (contacts, DSP, parcours): {r.instruction_attached} person(s) "
                f"attached, {r.instruction_kept_aside} kept aside until a beneficiary file brings them"
            )
        elif r.instruction_attached:
            err_console.print(f"{r.filename}: {r.instruction_attached} instruction record(s) attached to their person")
        if r.pending_events_applied:
            err_console.print(
                f"{r.filename}: {r.pending_events_applied} orientation event(s) waiting for their person applied "
                "(passerelle orientations pending)"
            )
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
    from app.flux import service as flux_files

    settings = ready_settings()
    with session_scope() as session:
        silent = _silent(session, settings)
        silent_keys = {(x.departement, x.organisme) for x in silent}
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
                # issue #26: this file's département/organisme silent today (passerelle flux freshness)
                "silencieux": (f.departement_code, f.fonorg) in silent_keys,
            }
            for f in flux_files.latest(session, limit)
        ]
    if as_json:
        print_json(rows)
        return
    columns = ("id", "departement", "filename", "status", "type_flux", "received_on", "foyers", "persons")
    print_rows(
        ("id", "dép.", "file", "status", "type", "received", "foyers", "persons", "warn.", "rej."),
        [[r[k] for k in (*columns, "warnings", "rejected_records")] for r in rows],
        narrow=("id", "file", "status", "type", "received", "persons"),
    )
    for x in silent:  # issue #26: a silent CAF/MSA, flagged under the files (passerelle flux freshness)
        console.print(_alert(x), markup=False, highlight=False)  # an organisme as the file wrote it


def _alert(line: Any) -> str:
    """A silent organisme's line, wrapped at 80 columns (a terminal's width)."""
    import textwrap

    return textwrap.fill(f"ALERTE : {line.message(with_departement=True)}", width=80, subsequent_indent="  ")


def _silent(session: Any, settings: Any) -> list[Any]:
    """The départements/organismes silent today (app.flux.freshness), among every département configured."""
    from app.admin.departements import known_codes
    from app.clock import today
    from app.flux.freshness import freshness

    lines = freshness(session.connection(), known_codes(session), today(settings), settings.pilotage_gap_days)
    return [x for x in lines if x.silent]


@flux_app.command("freshness")
def flux_freshness(
    as_of: Annotated[str | None, typer.Option("--as-of", help="Files received on or before (default: today)")] = None,
    departement: Annotated[str | None, typer.Option(help="Département (default: all)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Is a CAF or an MSA silent? The last beneficiary file of each département and organisme, and the working
    days since (weekends and French public holidays not counted). Exit code 1 when one is silent for more than
    PASSERELLE_PILOTAGE_GAP_DAYS working days (or a département never got a file), 0 otherwise.

    Example: passerelle flux freshness --as-of 2026-12-07 --json"""
    from app.clock import today
    from app.db import get_engine
    from app.flux.freshness import freshness, overall

    settings = ready_settings()
    day = parse_day(as_of, "--as-of") or today(settings)
    deps = chosen_departements(departement)
    with get_engine(settings).connect() as conn:
        lines = freshness(conn, deps, day, settings.pilotage_gap_days)
    status = overall(lines)
    if as_json:
        print_json({
            "as_of": day.isoformat(),
            "seuil_jours_ouvres": settings.pilotage_gap_days,
            "status": status,
            "items": [x.as_json() | {"message": x.message() if x.silent else None} for x in lines],
        })  # fmt: skip
    else:
        print_rows(
            ("dép.", "organisme", "dernier fichier", "jours ouvrés", "état"),
            [[x.departement, x.organisme or "-", x.last_received_on.strftime("%d/%m/%Y") if x.last_received_on
              else "-", "-" if x.working_days is None else x.working_days, x.status] for x in lines],
        )  # fmt: skip
        for x in lines:
            if x.silent:
                console.print(_alert(x), markup=False, highlight=False)  # an organisme as the file wrote it
        console.print(f"Au {day.strftime('%d/%m/%Y')}, seuil {settings.pilotage_gap_days} jours ouvrés : {status}.")
    if status != "ok":
        raise typer.Exit(ExitCode.REJECTED)


@flux_app.command("show")
def flux_show(file_id: int) -> None:
    """One file's full ingestion report (JSON), with its id and its identity-only matches by status (open,
    split)."""
    from app.db import session_scope
    from app.flux import service as flux_files
    from app.flux.identity_review import file_counts

    ready_settings()
    with session_scope() as session:
        row = flux_files.get(session, file_id)
        if row is None:
            raise fail(f"no flux file #{file_id} (see `passerelle flux list`)", ExitCode.USAGE)
        # the identity-only matches it made, as they stand now (`passerelle persons identity-matches`)
        matches = file_counts(session, row.id)
        print_json(dict(row.report or {}) | {"file_id": row.id, "status": row.status, "identity_matches": matches})


@flux_app.command("watch")
def flux_watch(
    inbox: Annotated[Path, typer.Argument(help="Directory where flux files are dropped", file_okay=False)],
    interval: Annotated[float, typer.Option(help="Seconds between two looks")] = 10.0,
    once: Annotated[bool, typer.Option("--once", help="Process what is there, then stop")] = False,
    departement: Annotated[str | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per file taken")] = False,
    settle: Annotated[
        float | None,
        typer.Option(
            min=0,
            max=86_400,
            help="Seconds a file must be left unchanged before it is taken "
            "(default PASSERELLE_INBOX_SETTLE_SECONDS, 60)",
        ),
    ] = None,
) -> None:
    """Ingest files dropped in INBOX; move each to INBOX/processed or INBOX/quarantine.

    The reception date is the day the file landed in the inbox (its modification time, Europe/Paris).
    A file is taken once complete: NAME.done beside it, or unchanged for --settle seconds; names starting
    with a dot or ending in .part/.tmp/.filepart/.partial are never taken (write under such a name, then
    rename). One watcher per inbox: with --once, exit 5 when another holds it, 1 when a file it took was
    rejected.
    """
    import time

    from app.db import get_engine
    from app.flux.inbox import InboxBusy, process_inbox

    if not inbox.is_dir():
        raise fail(f"no inbox directory {inbox} (create it, or check the path)", ExitCode.USAGE)
    if departement is not None:
        validated_departement(departement)
    settings = ready_settings()
    while True:
        try:
            outcomes = process_inbox(get_engine(settings), settings, inbox, departement, settle)
        except InboxBusy:
            if once:
                raise
            outcomes = []  # another watcher has it this time: the next look
        for outcome in outcomes:
            if as_json:
                print(
                    json.dumps(
                        {
                            "file": outcome.name,
                            "status": outcome.status,
                            "file_id": outcome.file_id,
                            "moved_to": str(outcome.moved_to),
                            "reason": outcome.reason,
                        },
                        ensure_ascii=False,
                    ),
                    flush=True,
                )
                continue
            style = {"applied": "green", "duplicate": "yellow", "rejected": "red", "error": "red"}[outcome.status]
            why = f": {outcome.reason}" if outcome.reason else ""
            console.print(
                f"[{style}]{outcome.status}[/] {outcome.name} -> {outcome.moved_to}{why}",
                highlight=False,
                soft_wrap=True,
            )
        if once:
            if any(o.status in ("rejected", "error") for o in outcomes):
                raise typer.Exit(int(ExitCode.REJECTED))
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
    instruction: Annotated[
        bool, typer.Option("--instruction", help="Also instruction fluxes (contacts, DSP) for new demands")
    ] = False,
) -> None:
    """Write realistic, fictitious flux files (stock, then daily files) and a manifest.json."""
    from app.flux.generator import generate

    start_day = parse_day(start, "--start")
    assert start_day is not None
    files = generate(
        out, foyers, days, start_day, seed, validated_departement(departement), gzip_files, instruction=instruction
    )
    stock = [f for f in files if f.initial_stock]
    monthly = [f for f in files if f.type_flux == "M" and not f.initial_stock]
    daily = [f for f in files if f.type_flux == "I" and f.nature == "D"]
    instructions = [f for f in files if f.nature == "I"]
    console.print(
        f"wrote {len(files)} files to {out}: the initial stock ({len(stock)} monthly files, CAF and MSA, "
        f"{sum(f.foyers for f in stock)} foyers), {len(monthly)} later monthly files and {len(daily)} daily "
        f"files ({sum(f.foyers for f in daily)} foyer records: the changes of {days} days)"
        + (
            f", {len(instructions)} instruction files ({sum(f.foyers for f in instructions)} new demands)"
            if instruction
            else ""
        )
        + ". manifest.json lists "
        "them with the date each was received; ingest the stock with --initial-stock first.",
        highlight=False,
    )
