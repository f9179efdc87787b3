"""`passerelle webhooks`: what partners' webhooks (RDV-Insertion) brought and could not give to a person,
and reading stored deliveries again after a change of settings."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Annotated

import typer

from app.cli.common import (
    ExitCode,
    console,
    fail,
    parse_day,
    print_json,
    print_rows,
    ready_settings,
    validated_departement,
)

webhooks_app = typer.Typer(
    help="Partners' webhooks (RDV-Insertion): unmatched items, replay.", no_args_is_help=True, rich_markup_mode=None
)


def _departements(departement: str | None) -> list[str]:
    from app.admin.departements import known_codes
    from app.db import session_scope

    if departement is not None:
        return [validated_departement(departement)]
    with session_scope() as session:
        return known_codes(session)


@webhooks_app.command("unmatched")
def webhooks_unmatched(
    departement: Annotated[str | None, typer.Option(help="Département (default: all)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """What RDV-Insertion sent for persons not (yet) known, and why; matched again after each flux."""
    from app.db import session_scope
    from app.integrations.rdv_insertion.webhooks import unmatched

    ready_settings()
    with session_scope() as session:
        rows = unmatched(session, _departements(departement))
    if as_json:
        print_json(rows)
        return
    print_rows(
        ("id", "dép.", "record", "event", "date", "reason"),
        [(r["id"], r["departement"], r["record"], r["event"], r["date"], r["reason"]) for r in rows],
        narrow=("id", "record", "event", "date"),
    )


@webhooks_app.command("replay")
def webhooks_replay(
    since: Annotated[str | None, typer.Option("--since", help="Deliveries received from this day (YYYY-MM-DD)")] = None,
    unreadable: Annotated[
        bool,
        typer.Option(
            "--unreadable",
            help="Only the deliveries kept as unreadable (answered 422, status malformed), whenever received",
        ),
    ] = False,
    departement: Annotated[str | None, typer.Option(help="Département (default: all)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Read stored deliveries again with the current settings and code (e.g. a motif category newly mapped,
    or, with --unreadable, deliveries refused as unreadable once a new version reads them): what they now say
    and was not taken is taken; what was applied stays. Give --since, --unreadable or both."""
    from app.db import session_scope
    from app.integrations.rdv_insertion.webhooks import replay

    if since is None and not unreadable:
        raise fail("give --since YYYY-MM-DD, --unreadable, or both", ExitCode.USAGE)
    day = parse_day(since, "--since") if since is not None else None
    settings = ready_settings()
    moment = datetime.combine(day, time.min, tzinfo=UTC) if day is not None else None
    results = {}
    for code in _departements(departement):
        with session_scope(settings, write=True) as session:
            results[code] = replay(session, settings, code, moment, unreadable=unreadable)
    if as_json:
        print_json(results)
    else:
        for code, counts in results.items():
            summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing to take"
            console.print(f"{code}: {summary}")
    if not results:
        raise fail("no département registered", ExitCode.USAGE)
