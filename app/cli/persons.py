"""`passerelle persons`: the identity-only matches (names and birth date alone) to review, and the split of
one that joined two persons (app.flux.identity_review)."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.common import ExitCode, chosen_departements, console, fail, print_json, print_rows, ready_settings

persons_app = typer.Typer(
    help="Persons known from the flux: identity-only matches to review, and their split.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@persons_app.command("identity-matches")
def persons_identity_matches(
    departement: Annotated[str | None, typer.Option(help="One département (default: every one)")] = None,
    status: Annotated[str | None, typer.Option(help="open or split (default: both)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List the records joined to a known person by names and birth date alone (no NIR, matricule or demand
    number in common), newest first: the match's id, the person, the file and the foyer's position in it,
    the foyer (organisme + matricule), its date and status. Never a name, a NIR or a birth date: look the
    person up with `persons:read` to review; undo a wrong one with `passerelle persons split`."""
    from app.db import session_scope
    from app.flux.identity_review import STATUSES, list_matches

    if status is not None and status not in STATUSES:
        raise fail("--status is open or split", ExitCode.USAGE)
    ready_settings()
    departements = chosen_departements(departement)
    with session_scope() as session:
        matches = list_matches(session, departements, status)
        rows = [
            {
                "id": m.id,
                "departement": m.departement_code,
                "person_id": m.person_id,
                "file_id": m.file_id,
                "foyer": m.foyer_position,
                "person": m.person_position,
                "foyer_key": " ".join(x for x in (m.fonorg, m.numorg, m.matricule) if x),
                "role": m.role,
                "received_on": m.received_on.isoformat(),
                "status": m.status,
                "split_person_id": m.split_person_id,
            }
            for m in matches
        ]
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no identity-only match", highlight=False)
        return
    columns = list(rows[0])
    print_rows(
        columns,
        [[r[c] for c in columns] for r in rows],
        narrow=["id", "person_id", "file_id", "foyer_key", "received_on", "status"],
    )


@persons_app.command("split")
def persons_split(
    match_id: Annotated[int, typer.Argument(help="The match's id (`passerelle persons identity-matches`)")],
    reason: Annotated[str, typer.Option(help="Why the two are different persons (kept with the match)")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Undo an identity-only match: what the matched foyer said from that file on goes to a new person (with
    the foyer's keys, and the NIR if that record brought it), both persons' facts and entry episodes are
    recomputed, and names + birth date never join the two again. Audited (`persons.split`).

    Exit codes: 0 split; 1 nothing to split (already split, no record left) or no reason given; 2 unknown
    match."""
    from app.db import session_scope
    from app.flux.identity_review import split

    settings = ready_settings()
    with session_scope(settings, write=True) as session:
        outcome = split(session, settings, match_id, reason, by="job:persons split")
    if as_json:
        print_json(outcome.as_dict())
        return
    console.print(
        f"match #{outcome.match_id} split: the foyer's {outcome.records_moved} record(s) now belong to person "
        f"{outcome.new_person_id} (was {outcome.person_id}); {outcome.keys_moved} key(s) moved"
        + (", the NIR with them" if outcome.nir_moved else "")
        + f"; {outcome.episodes} entry episode(s) recomputed",
        highlight=False,
    )
