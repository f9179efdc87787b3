"""`passerelle orientations` and `passerelle episodes`: what the orientation platform sends, and the entry
episodes derived from the facts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli.common import (
    ExitCode,
    console,
    err_console,
    fail,
    print_json,
    print_rows,
    ready_settings,
    validated_departement,
)
from app.cli.flux import refresh_episodes

orientations_app = typer.Typer(
    help="Orientation events sent by the platform (bulk import).", no_args_is_help=True, rich_markup_mode=None
)
episodes_app = typer.Typer(
    help="Entry episodes (nouveaux entrants) derived from the facts.", no_args_is_help=True, rich_markup_mode=None
)


@orientations_app.command("import")
def orientations_import(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, help="CSV with a header: ; or , separated, UTF-8 (BOM or not) or Windows-1252"
        ),
    ],
    departement: Annotated[str | None, typer.Option(help="Département (default: the only one registered)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    file_format: Annotated[
        str,
        typer.Option(
            "--format", help="events (our columns), rdv-insertion (its users export) or auto (from the header)"
        ),
    ] = "auto",
) -> None:
    """Import orientation events (reprise de stock, platform exports). Valid rows are applied in one
    transaction; rejected rows are listed with their line and reason (exit code 1 if any); a column that does
    not concern a row's event is ignored with a warning (docs/rules.md, "CSV import")."""
    from app.admin.departements import known_codes
    from app.db import session_scope
    from app.errors import PasserelleError
    from app.integrations.rdv_insertion.users_export import import_export
    from app.orientation.service import import_csv

    if file_format not in ("auto", "events", "rdv-insertion"):
        raise fail("--format is auto, events or rdv-insertion", ExitCode.USAGE)
    data = file.read_bytes()
    if file_format == "auto":
        from app.integrations.rdv_insertion.users_export import is_rdv_insertion_export
        from app.kit.csv import decode_csv

        try:
            text, _encoding = decode_csv(data)
        except PasserelleError as exc:
            raise fail(f"{file.name}: {exc.message}", ExitCode.REJECTED) from exc
        file_format = "rdv-insertion" if is_rdv_insertion_export(text) else "events"
    settings = ready_settings()
    try:
        with session_scope(write=True) as session:
            if departement is None:
                codes = known_codes(session)
                if len(codes) != 1:
                    raise fail("several départements are registered: give --departement", ExitCode.USAGE)
                departement = codes[0]
            importer = import_export if file_format == "rdv-insertion" else import_csv
            report = importer(session, settings, validated_departement(departement), data, recorded_by="cli")
    except PasserelleError as exc:
        raise fail(f"{file.name}: {exc.message}", ExitCode.REJECTED) from exc
    if as_json:
        print_json(report.__dict__)
    else:
        console.print(
            f"{file_format}: {report.rows} rows ({report.encoding}, separator {report.separator!r}): "
            f"{report.applied} applied, {report.already_known} already known, "
            f"{report.pending} en attente d'une personne, "
            f"{len(report.rejected)} rejected, {len(report.warnings)} warnings"
        )
        if report.pending:
            err_console.print(
                f"  {report.pending} rows name a person no flux has brought yet: kept aside, applied with their "
                "own dates when a flux brings them (`passerelle orientations pending`)"
            )
        for item in report.warnings[:50]:
            err_console.print(f"  line {item['line']}: warning: {item['message']}")
        for item in report.rejected[:50]:
            err_console.print(f"  line {item['line']}: {item['reason']}")
    if report.rejected:
        raise typer.Exit(int(ExitCode.REJECTED))


@orientations_app.command("pending")
def orientations_pending(
    departement: Annotated[str | None, typer.Option(help="Département (default: all)")] = None,
    status: Annotated[str, typer.Option(help="pending, applied, dropped or all")] = "pending",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Events kept aside (en attente d'une personne): sent for a person no flux has brought yet, applied
    with their own dates when a flux brings them. Never shows the NIR."""
    from app.db import session_scope
    from app.orientation.pending import listing

    if status not in ("pending", "applied", "dropped", "all"):
        raise fail("--status is pending, applied, dropped or all", ExitCode.USAGE)
    ready_settings()
    deps = [validated_departement(departement)] if departement else None  # kept aside before any flux: any code
    with session_scope() as session:
        rows = listing(session, deps, None if status == "all" else status, limit=100_000)
    if as_json:
        print_json(rows)
        return
    print_rows(
        ("id", "dép.", "source", "date", "type", "status", "reason"),
        [(r["id"], r["departement"], r["source"], r["date"], r["type"], r["status"], r["reason"]) for r in rows],
        narrow=("id", "source", "date", "type"),
    )
    err_console.print(f"{len(rows)} event(s) {status}")


@orientations_app.command("drop-pending")
def orientations_drop_pending(
    pending_id: Annotated[int, typer.Argument(help="The id `passerelle orientations pending` gives")],
    reason: Annotated[str, typer.Option("--reason", help="Why it is dropped (kept with it, and audited)")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Drop an event kept aside (a wrong reference, a person who will never come): it will not be applied."""
    from app.audit.chain import job_principal
    from app.db import session_scope
    from app.orientation.pending import describe, drop

    ready_settings()
    with session_scope(write=True) as session:
        row = describe(drop(session, None, pending_id, reason, job_principal("orientations drop-pending")))
    if as_json:
        print_json(row)
    else:
        console.print(f"pending event {row['id']} ({row['type']} of {row['date']}) dropped")


@episodes_app.command("refresh")
def episodes_refresh(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Recompute the entry episodes of persons whose facts changed (each ingestion does it after its commit;
    run it if one reported that this failed)."""
    ready_settings()
    n = refresh_episodes(quiet=as_json)
    if as_json:
        print_json({"recomputed": n})
    else:
        console.print(f"{n} persons recomputed")
