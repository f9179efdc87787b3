"""The pseudonymised extract for analysis (issue #15): one line per entry episode, streamed (CSV or JSON
lines), with a stable pseudonymous id and no name, NIR, address, exact birth date or contact.

The id is a keyed hash of our person id with the extract key (`PASSERELLE_EXTRACT_KEY`): two extracts
made with the same key join on it; an extract made with another key does not join with them. The key never
leaves the service; changing it unlinks every extract made before.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import date
from typing import Any

from sqlalchemy import Connection, select

from app.kit.csv import iter_csv
from app.models import EntryEpisode, FtSnapshot, Person, PersonState
from app.pilotage.absences import NO_RDV, RdvReading, accompaniment_by_episode
from app.pilotage.period import Period, end_of_day, month_of
from app.pilotage.population import in_period, rdv_orientation
from app.rules.deadlines import oriented_within_six_weeks
from app.rules.episodes import ORIENTED, known_as_of, last_cer_as_of, last_contract_as_of, outcome_as_of

COLUMNS = ("id_pseudo", "departement", "mois_naissance", "sexe", "commune", "role", "caf_msa", "t0",
           "invitation", "rdv_orientation", "absent_rdv_orientation", "absent_rdv_orientation_non_revu",
           "excuse_rdv_orientation", "absent_rdv_accompagnement", "absent_rdv_accompagnement_non_revu",
           "excuse_rdv_accompagnement", "orientation", "issue", "delai_jours", "oriente_15j", "organisme_referent",
           "type_parcours", "accompagnement_global", "premier_rdv_accompagnement", "contrat", "date_contrat",
           "date_cer", "statut_france_travail", "horloge_legale", "echeance_legale",
           "oriente_dans_les_six_semaines")  # fmt: skip
PAGE = 5000


def pseudonym(key: bytes, person_id: int) -> str:
    return hmac.new(key, f"person:{person_id}".encode(), hashlib.sha256).hexdigest()[:24]


def _day(value: date | None, as_of: date) -> str | None:
    known = known_as_of(value, as_of)
    return known.isoformat() if known is not None else None


def _statuts(conn: Connection, entrants: Any, as_of: date) -> dict[int, Any]:
    """The latest France Travail statut known on as_of, per person (as many as persons, whatever the number
    of lines)."""
    fs = FtSnapshot.__table__.c
    statuts: dict[int, Any] = {}
    for pid, data in conn.execute(
        select(fs.person_id, fs.data)
        .where(
            fs.person_id.in_(entrants), fs.kind == "statut", fs.no_data.is_(False), fs.fetched_at < end_of_day(as_of)
        )
        .order_by(fs.person_id, fs.fetched_at, fs.id)
    ):
        statuts[pid] = data
    return statuts


def _episodes_query(where: tuple[Any, ...]) -> Any:
    """The episodes counted, joined once to what their T0 file said (a person twice in it: two lines)."""
    ee, p, ps = EntryEpisode.__table__.c, Person.__table__.c, PersonState.__table__.c
    return (
        select(
            ee.id,
            ee.person_id,
            ee.departement_code,
            ee.t0,
            ee.outcome,
            ee.end_on,
            ee.delay_days,
            ee.within_15_days,
            ee.organisme,
            ee.type_parcours,
            ee.accompagnement_global,
            ee.invitation_on,
            ee.rdv_orientation_on,
            ee.rdv_orientation_missed_on,
            ee.rdv_orientation_seen_on,
            ee.rdv_orientation_excused_on,
            ee.first_rdv_accompagnement_on,
            ee.contrats,
            ee.caf_msa,
            ee.commune,
            ee.legal_clock,
            ee.legal_deadline,
            p.sexe,
            p.date_naissance,
            ps.role,
        )
        .join(Person.__table__, p.id == ee.person_id)
        .outerjoin(PersonState.__table__, (ps.person_id == ee.person_id) & (ps.file_id == ee.t0_file_id))
        .where(*where)
        .order_by(ee.id)
    )


class _Pseudonyms:
    """The pseudonym of each person, the keyed hash copied per person (half the cost of hmac.new each
    time), remembered for the next lines (at most 200,000 at once: memory stays flat)."""

    def __init__(self, key: bytes) -> None:
        self.mac = hmac.new(key, digestmod=hashlib.sha256)
        self.known: dict[int, str] = {}

    def of(self, person_id: int) -> str:
        pid = self.known.get(person_id)
        if pid is None:
            one = self.mac.copy()
            one.update(f"person:{person_id}".encode())
            pid = self.known[person_id] = one.hexdigest()[:24]
            if len(self.known) > 200_000:
                self.known.clear()
        return pid


def _line(r: Any, pid: str, statut: Any, as_of: date, accompaniment: RdvReading = NO_RDV) -> dict[str, Any]:
    """One episode as seen on as_of (the one reading: `rules.outcome_as_of`; the absents as the tables count
    them: `population.rdv_orientation`, and the accompaniment RDVs of the episode as read by
    `absences.accompaniment_by_episode`, counted for an oriented episode; the contracts as the weekly file
    writes them)."""
    issue = outcome_as_of(r, as_of)
    oriented = issue == ORIENTED
    rdv = rdv_orientation(r, as_of)
    acc = accompaniment if oriented else NO_RDV
    contrat, cer_on = last_contract_as_of(r.contrats, as_of), last_cer_as_of(r.contrats, as_of)
    return {
        "id_pseudo": pid,
        "departement": r.departement_code,
        "mois_naissance": month_of(r.date_naissance) if r.date_naissance else None,
        "sexe": r.sexe,
        "commune": r.commune,
        "role": r.role,
        "caf_msa": r.caf_msa,
        "t0": r.t0.isoformat(),
        "invitation": _day(r.invitation_on, as_of),
        "rdv_orientation": _day(r.rdv_orientation_on, as_of),
        "absent_rdv_orientation": rdv.missed,
        "absent_rdv_orientation_non_revu": rdv.never_seen,
        "excuse_rdv_orientation": rdv.excused,
        "absent_rdv_accompagnement": acc.missed,
        "absent_rdv_accompagnement_non_revu": acc.never_seen,
        "excuse_rdv_accompagnement": acc.excused,
        "orientation": r.end_on.isoformat() if oriented else None,
        "issue": issue,
        "delai_jours": r.delay_days if oriented else None,
        "oriente_15j": bool(r.within_15_days) if oriented else None,
        "organisme_referent": r.organisme if oriented else None,
        "type_parcours": r.type_parcours if oriented else None,
        "accompagnement_global": r.accompagnement_global if oriented else None,
        "premier_rdv_accompagnement": _day(r.first_rdv_accompagnement_on, as_of),
        "contrat": contrat[1] if contrat else None,
        "date_contrat": contrat[0].isoformat() if contrat else None,
        "date_cer": cer_on.isoformat() if cer_on else None,
        "statut_france_travail": statut.get("statutDE") if isinstance(statut, dict) else None,
        # CASF art. D.262-65-2: ouverture_droit | transfert_droit | empty (no clock); T0 + 42 days
        "horloge_legale": r.legal_clock,
        "echeance_legale": r.legal_deadline.isoformat() if r.legal_deadline else None,
        "oriente_dans_les_six_semaines": oriented_within_six_weeks(r.legal_deadline, r.end_on) if oriented else None,
    }


def rows(
    conn: Connection, key: bytes, departements: list[str], period: Period, as_of: date
) -> Iterator[dict[str, Any]]:
    """The episodes with T0 in the period (on or before as_of), each as one dict: one query, streamed (a
    server-side cursor on PostgreSQL), joined once to what the T0 file said and to the latest France Travail
    statut known on as_of; memory stays flat. (A page per query with a subquery per line made 2,100 lines
    a second on PostgreSQL: bench/BENCHMARKS.md.)"""
    where = in_period(departements, period, as_of)
    entrants = select(EntryEpisode.__table__.c.person_id).where(*where)
    statuts = _statuts(conn, entrants, as_of)
    accompaniment = accompaniment_by_episode(conn, entrants, as_of)
    pseudonyms = _Pseudonyms(key)
    previous = None
    for r in conn.execution_options(stream_results=True, yield_per=PAGE).execute(_episodes_query(where)):
        if r.id == previous:  # the person is twice in their T0 file (two roles): one line per episode
            continue
        previous = r.id
        acc = accompaniment.get((r.person_id, r.t0), NO_RDV)
        yield _line(r, pseudonyms.of(r.person_id), statuts.get(r.person_id), as_of, acc)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def as_csv(items: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    """`;`, UTF-8 with a BOM, CRLF, ISO dates, `true`/`false`: for pandas/R as for Excel (`;`); written by
    the one CSV writer (`app.kit.csv`), which neutralises formulas in text cells."""
    return iter_csv(COLUMNS, ([_cell(item[c]) for c in COLUMNS] for item in items), chunk_rows=2000)


def as_jsonl(items: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    chunk: list[str] = []
    for item in items:
        chunk.append(json.dumps(item, ensure_ascii=False))
        if len(chunk) == 2000:
            yield ("\n".join(chunk) + "\n").encode()
            chunk = []
    if chunk:
        yield ("\n".join(chunk) + "\n").encode()
