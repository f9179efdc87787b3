"""`passerelle audit`: the record of accesses to personal data, for auditors and the DPO (the CLI's own
queries are recorded too)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from app.cli.common import ExitCode, chosen_departements, fail, parse_day, print_json, print_rows, ready_settings

audit_app = typer.Typer(
    help="Who accessed which person's data: search, per person, CSV; the chain's seal, anchor and verification.",
    no_args_is_help=True,
)


@audit_app.command("accesses")
def audit_accesses(
    person: Annotated[int | None, typer.Option(min=1, help="Our person id")] = None,
    client: Annotated[str | None, typer.Option(help="Principal id (client name, subject, job:..., link:...)")] = None,
    agent: Annotated[str | None, typer.Option(help="The acting agent's identifiant")] = None,
    since: Annotated[str | None, typer.Option(help="From this day, YYYY-MM-DD (Europe/Paris)")] = None,
    until: Annotated[str | None, typer.Option(help="To this day, included")] = None,
    action: Annotated[str | None, typer.Option(help="Exact, or a prefix: ft. or export.*")] = None,
    not_found: Annotated[bool, typer.Option("--not-found", help="Only searches that found nobody, and 404s")] = False,
    outcome: Annotated[
        str | None,
        typer.Option(help="ok, not_found, refused (401, 403, 429, refused links and signatures), rejected, error"),
    ] = None,
    departement: Annotated[
        str | None,
        typer.Option(help="Département (default: all, and '*': the events of no one département)"),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV ; UTF-8 with BOM on stdout")] = False,
) -> None:
    """Search the accesses to personal data, newest first: reads, actions, and the refused and missing ones
    (counted per minute). Times in Europe/Paris."""
    from app.audit import search as audit
    from app.audit.chain import ALL_DEPARTEMENTS, OUTCOMES
    from app.db import session_scope
    from app.persons.repository import audit_job_reads

    settings = ready_settings()
    if outcome is not None and outcome not in OUTCOMES:
        raise fail(f"--outcome: one of {', '.join(OUTCOMES)}", ExitCode.USAGE)
    if departement == ALL_DEPARTEMENTS:
        deps: tuple[str, ...] = (ALL_DEPARTEMENTS,)
    else:  # every département also shows the events of none (a file rejected before its département was read)
        deps = chosen_departements(departement) + (() if departement else (ALL_DEPARTEMENTS,))
    criteria = audit.AuditFilter(
        deps, person, client, agent, parse_day(since, "--since"), parse_day(until, "--until"), action,
        False if not_found else None, outcome, settings.business_timezone,
    )  # fmt: skip
    with session_scope() as session:
        result = audit.search(session, criteria, limit)
    with session_scope() as session:  # the journal is written in a transaction that did not read it
        audit_job_reads(session, "audit accesses", "audit.search", [(person, d) for d in deps])
    if as_csv:
        sys.stdout.write(audit.to_csv(result["items"]))
        return
    if as_json:
        print_json(result)
        return
    print_rows(
        ("at", "who", "agent", "person", "action", "outcome", "detail", "address"),
        [(i["at"][:19].replace("T", " "), i["principal_id"], i["agent_identifiant"], i["person_id"], i["action"],
          i["outcome"], i["detail"], i["source_address"]) for i in result["items"]],
        narrow=("at", "who", "action", "outcome", "detail"),
    )  # fmt: skip
    if result["total"] > len(result["items"]):
        print(f"{len(result['items'])} of {result['total']}: narrow the search or raise --limit", file=sys.stderr)


@audit_app.command("person")
def audit_person(
    person_id: Annotated[int, typer.Argument(min=1, help="Our person id")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Who accessed this person's data: each client and agent, how often, first and last time, what."""
    from app.audit import search as audit
    from app.db import session_scope
    from app.models import Person
    from app.persons.repository import audit_job_reads

    settings = ready_settings()
    with session_scope() as session:
        person = session.get(Person, person_id)
        if person is None:
            raise fail(f"no person {person_id}", ExitCode.USAGE)
        result = audit.who_accessed(session, (person.departement_code,), person.id, settings.business_timezone)
    with session_scope() as session:  # the journal is written in a transaction that did not read it
        audit_job_reads(session, "audit person", "audit.person", [(person.id, person.departement_code)])
    if as_json:
        print_json(result)
        return
    print_rows(
        ("who", "agent", "accesses", "first", "last", "actions"),
        [(a["principal_id"], a["agent_identifiant"], a["accesses"], a["first"][:19].replace("T", " "),
          a["last"][:19].replace("T", " "),
          ", ".join(a["actions"])) for a in result["accessors"]],
        narrow=("who", "accesses", "last"),
    )  # fmt: skip


@audit_app.command("seal")
def audit_seal() -> None:
    """Seal the audit events written since the last seal into the chain (the server does it every few
    seconds; cron may too)."""
    from app.audit.chain import seal
    from app.db import get_engine

    settings = ready_settings()
    print(f"{seal(get_engine(settings), settings)} event(s) sealed")


@audit_app.command("anchor")
def audit_anchor(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Seal what is pending, then print the chain's head as SEQ:MAC: keep it outside the database (a
    ticket, a mail to the DPO) and give it later to `audit verify --anchor`."""
    from app.audit.chain import anchor
    from app.db import get_engine

    settings = ready_settings()
    head = anchor(get_engine(settings), settings)
    if as_json:
        print_json(head)
    else:
        print(f"{head['seq']}:{head['mac']}")


@audit_app.command("verify")
def audit_verify(
    anchor_value: Annotated[
        str | None, typer.Option("--anchor", help="SEQ:MAC from `audit anchor`: the chain must still reach it")
    ] = None,
    no_seal: Annotated[bool, typer.Option("--no-seal", help="Check only, seal nothing first")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Walk the audit chain and name every event modified, deleted, inserted or moved. Exit 0 only for an
    intact chain (1 otherwise)."""
    from app.audit.chain import parse_anchor, seal, verify
    from app.db import get_engine

    settings = ready_settings()
    try:
        given = parse_anchor(anchor_value) if anchor_value else None
    except ValueError as exc:
        raise fail(f"--anchor: {exc}", ExitCode.USAGE) from None
    engine = get_engine(settings)
    if not no_seal:
        seal(engine, settings)
    result = verify(engine, settings, given)
    if as_json:
        print_json(result.as_dict())
    else:
        for problem in result.problems:
            print(f"{problem['kind']}: {problem['message']}", file=sys.stderr)
        state = "intact" if result.intact else f"BROKEN ({len(result.problems)} problem(s))"
        print(f"audit chain {state}: {result.checked} event(s) checked up to #{result.head_seq}, "
              f"{result.unsealed} not yet sealed")  # fmt: skip
    if not result.intact:
        raise typer.Exit(int(ExitCode.REJECTED))
