"""`passerelle audit`: the record of accesses to personal data, for auditors and the DPO (the CLI's own
queries are recorded too)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from app.cli.common import ExitCode, chosen_departements, fail, parse_day, print_json, print_rows, ready_settings
from app.settings import Settings

audit_app = typer.Typer(
    help="Who accessed which person's data: search, per person, CSV; the chain's seal, anchor and verification.",
    no_args_is_help=True,
    rich_markup_mode=None,
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
    (counted per minute), each with its outcome and detail and the API client's name beside its id. Times in
    Europe/Paris: jj/mm/aaaa hh:mm in the table and the CSV, ISO with the offset in --json."""
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
        [(audit.shown_time(i["at"]), audit.who(i), i["agent_identifiant"], i["person_id"], i["action"],
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
        [(audit.who(a), a["agent_identifiant"], a["accesses"], audit.shown_time(a["first"]),
          audit.shown_time(a["last"]), ", ".join(a["actions"])) for a in result["accessors"]],
        narrow=("who", "accesses", "last"),
    )  # fmt: skip


@audit_app.command("seal")
def audit_seal() -> None:
    """Seal the audit events written since the last seal into the chain (the server does it every few
    seconds; cron may too). An event without valid proof that the service wrote it is never sealed: exit 1."""
    from app.audit.chain import seal
    from app.db import get_engine

    settings = ready_settings()
    done = seal(get_engine(settings), settings)
    print(f"{done} event(s) sealed")
    if done.unproven:  # written outside the service: never sealed (issue #23)
        print(f"{done.unproven} event(s) NOT sealed: no valid proof that the service wrote them; "
              "`passerelle audit verify` names them", file=sys.stderr)  # fmt: skip
        raise typer.Exit(int(ExitCode.REJECTED))


@audit_app.command("anchor")
def audit_anchor(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Seal what is pending, then print the chain's head as SEQ:MAC: keep it outside the database (a
    ticket, a mail to the DPO) and give it later to `audit verify --anchor`. With
    PASSERELLE_AUDIT_CHECKPOINT_DIR or _EMAIL set, a signed checkpoint is published too (docs/audit.md)."""
    from app.audit.chain import anchor
    from app.db import get_engine

    settings = ready_settings()
    head = anchor(get_engine(settings), settings)
    if as_json:
        print_json(head)
    else:
        print(f"{head['seq']}:{head['mac']}")
    _publish_checkpoint(settings)  # after the head is out: a mail server down does not lose the anchor


def _publish_checkpoint(settings: Settings) -> None:
    """At each anchor, a signed checkpoint too, when a destination is configured (said on stderr)."""
    from app.audit.checkpoint import publish, publishing
    from app.db import get_engine

    if not publishing(settings):
        return
    try:
        checkpoint, _note = publish(get_engine(settings), settings)
    except Exception as exc:
        message = f"the signed checkpoint was not published ({type(exc).__name__}: {exc})"
        raise fail(message, ExitCode.ENVIRONMENT) from exc
    print(f"signed checkpoint of {checkpoint.size} event(s) published", file=sys.stderr)


@audit_app.command("checkpoint")
def audit_checkpoint() -> None:
    """Sign a checkpoint of the chain now (C2SP signed note: its size and Merkle root, Ed25519), print it and
    publish it to PASSERELLE_AUDIT_CHECKPOINT_DIR / _EMAIL when set (the server does so every
    PASSERELLE_AUDIT_CHECKPOINT_INTERVAL_SECONDS). Seals what is pending first."""
    from app.audit.chain import seal
    from app.audit.checkpoint import current_checkpoint, private_key, publish, publishing, sign
    from app.db import get_engine

    settings = ready_settings()
    engine = get_engine(settings)
    seal(engine, settings)
    try:
        if publishing(settings):
            _checkpoint, note = publish(engine, settings)
        else:
            note = sign(current_checkpoint(engine, settings), private_key(settings))
    except RuntimeError as exc:
        raise fail(f"no checkpoint signed: {exc}", ExitCode.REJECTED) from None
    sys.stdout.write(note)


@audit_app.command("keygen")
def audit_keygen(
    public_key: Annotated[Path, typer.Option("--public-key", help="Where to write the public key (for the auditor)")],
    origin: Annotated[str | None, typer.Option(help="The log's name (default: passerelle-rsa.<host>/audit)")] = None,
) -> None:
    """Make the checkpoints' Ed25519 key pair: the private key is printed as PASSERELLE_AUDIT_SIGNING_KEY=...
    (put it with the other secrets), the public key is written to --public-key for the auditor."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from app.audit.checkpoint import origin as default_origin
    from app.audit.checkpoint import public_key_text
    from app.settings import get_settings

    name = origin or default_origin(get_settings())
    key = Ed25519PrivateKey.generate()
    if public_key.exists():
        raise fail(f"{public_key} exists: choose another path", ExitCode.USAGE)
    public_key.write_text(public_key_text(name, key), encoding="utf-8")
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    print(f"PASSERELLE_AUDIT_SIGNING_KEY={base64.urlsafe_b64encode(raw).decode().rstrip('=')}")
    print(f"PASSERELLE_AUDIT_CHECKPOINT_ORIGIN={name}")
    print(f"public key written to {public_key}: give it to the auditor", file=sys.stderr)


@audit_app.command("public-key")
def audit_public_key() -> None:
    """Print the public key of the checkpoints (PEM and signed-note verifier key): what the auditor keeps."""
    from app.audit.checkpoint import origin, private_key, public_key_text
    from app.settings import get_settings

    settings = get_settings()
    sys.stdout.write(public_key_text(origin(settings), private_key(settings)))


@audit_app.command("verify")
def audit_verify(
    anchor_value: Annotated[
        str | None, typer.Option("--anchor", help="SEQ:MAC from `audit anchor`: the chain must still reach it")
    ] = None,
    no_seal: Annotated[bool, typer.Option("--no-seal", help="Check only, seal nothing first")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    checkpoint: Annotated[
        Path | None, typer.Option(help="A signed checkpoint: check the journal against it with the public key only")
    ] = None,
    public_key: Annotated[Path | None, typer.Option("--public-key", help="The checkpoints' public key file")] = None,
    event: Annotated[int | None, typer.Option(min=1, help="With --checkpoint: prove this event id is in it")] = None,
) -> None:
    """Walk the audit chain and name every event modified, deleted, inserted or moved, every event the service
    did not write (unproven, sealed or not) and a base no purge moved. Exit 0 only for an intact chain (1
    otherwise). With --checkpoint and --public-key (no audit key needed, nothing sealed): the journal must
    still hold the checkpoint's events (exit 1 naming what is wrong; 6 if the checkpoint's signature does not
    verify)."""
    from app.audit.chain import parse_anchor, seal, verify
    from app.db import get_engine

    if checkpoint is not None or public_key is not None or event is not None:
        _verify_checkpoint(checkpoint, public_key, event, as_json)
        return
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


def _verify_checkpoint(checkpoint: Path | None, public_key: Path | None, event: int | None, as_json: bool) -> None:
    from app.audit.checkpoint import CheckpointError, SignatureError, open_note, parse_public_key, verify_checkpoint
    from app.db import get_engine

    if checkpoint is None or public_key is None:
        raise fail("--checkpoint and --public-key go together (--event needs both)", ExitCode.USAGE)
    try:
        note = checkpoint.read_text(encoding="utf-8")
        name, key = parse_public_key(public_key.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read a file: {exc}", ExitCode.USAGE) from None
    except CheckpointError as exc:
        raise fail(f"--public-key: {exc}", ExitCode.USAGE) from None
    try:
        signed = open_note(note, key, name)
    except CheckpointError as exc:
        raise fail(f"--checkpoint: {exc}", ExitCode.USAGE) from None
    except SignatureError as exc:
        raise fail(f"checkpoint NOT TRUSTED: {exc}", ExitCode.UNTRUSTED) from None
    settings = ready_settings()
    result = verify_checkpoint(get_engine(settings), signed, event)
    if as_json:
        print_json({**result.as_dict(), "origin": signed.origin})
    else:
        for problem in result.problems:
            print(f"{problem['kind']}: {problem['message']}", file=sys.stderr)
        if result.event and result.event.get("proof") is not None:
            proved = result.event
            print(f"event {proved['id']} is #{proved['seq']}, leaf {proved['leaf_index']} "
                  f"({proved['leaf_hash']}); inclusion proof ({len(proved['proof'])} hash(es)):")  # fmt: skip
            for step in proved["proof"]:
                print(f"  {step}")
            print(f"event {proved['id']} {'IS' if proved['included'] else 'is NOT'} in the checkpoint")
        state = "matches" if result.intact else f"does NOT match ({len(result.problems)} problem(s))"
        print(f"audit journal {state} the checkpoint of {signed.size} event(s) signed by {signed.origin} "
              f"(the chain is at #{result.head_seq}, starts after #{result.base_seq})")  # fmt: skip
    if not result.intact:
        raise typer.Exit(int(ExitCode.REJECTED))
