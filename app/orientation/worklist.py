"""The worklist: the persons waiting for an orientation on a day, by deadline (T0 first, or the legal deadline
of CASF art. D.262-65-2 first: `sort="legal_deadline"`).

"Waiting on day D" is the one as-of reading (`rules.outcome_as_of`), read here through its SQL twin
`episodes.waiting_on` (an index range on `entry_episodes`). Read by the HTTP worklist and the demo.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Literal, NamedTuple

from sqlalchemy import Connection, Date, bindparam, func, select
from sqlalchemy.orm import Session

from app.models import EntryEpisode, OrientationEvent, Person
from app.orientation.episodes import FT_SOURCE, waiting_on
from app.persons.states import states_as_of
from app.rules.deadlines import latest_t0_overdue

Sort = Literal["t0", "legal_deadline"]
# Only the persons whose legal deadline is past (France Travail may orient), near (within the warning days,
# not reached), or either.
LegalFilter = Literal["past", "near", "past_or_near"]


@dataclass(frozen=True)
class WorklistEntry:
    """One person waiting: their open episode, the person, and their latest state as present on the day (a
    row of `person_states`, if any). Rows of the columns a worklist shows (`EPISODE_COLUMNS`,
    `PERSON_COLUMNS`, `STATE_COLUMNS`), read with Core queries: loading ORM objects cost more than the
    queries themselves (issue #27)."""

    episode: Any  # Row
    person: Any  # Row
    state: Any | None  # Row
    # France Travail's latest préconisation for the person known on the day (read by ft sync), if any: shown,
    # it orients nobody (`preconisation_text`)
    ft_preconisation: Any | None = None  # Row


_ee = EntryEpisode
EPISODE_COLUMNS = (_ee.person_id, _ee.departement_code, _ee.t0, _ee.caf_msa, _ee.commune, _ee.invitation_on,
                   _ee.rdv_orientation_on, _ee.legal_clock, _ee.legal_deadline)  # fmt: skip
PERSON_COLUMNS = (Person.id, Person.departement_code, Person.nom, Person.prenom, Person.date_naissance)
STATE_COLUMNS = ("matricule", "role", "adresse", "codepos", "numcom", "nomcom")


# France Travail's parcours codes in French (Orientation usager v1: WebRSA's labels)
FT_PARCOURS_LABELS = {
    "PED": "emploi",
    "PSP": "socio-professionnel",
    "PSO": "social",
    "EO": "entretien d'orientation",
    "IND": "indéterminé",
}


def preconisation_text(event: Any) -> str | None:
    """ "préconisation France Travail du JJ/MM/AAAA (parcours …)", for a worklist item."""
    if event is None:
        return None
    parcours = FT_PARCOURS_LABELS.get(event.ft_parcours or "", event.ft_parcours or "non précisé")
    return f"préconisation France Travail du {event.event_date.strftime('%d/%m/%Y')} (parcours {parcours})"


_oe = OrientationEvent
# built once (issue #27); `ids` the page's persons
_PRECONISATIONS = (
    select(_oe.person_id, _oe.event_date, _oe.ft_parcours)
    .where(
        _oe.person_id.in_(bindparam("ids", expanding=True)),
        _oe.source == FT_SOURCE,
        _oe.ft_statut == "PRECONISE",
        _oe.event_date <= bindparam("day", type_=Date()),
    )
    .order_by(_oe.event_date, _oe.id)
)


def _preconisations(conn: Connection, episodes: Sequence[Any], day: date) -> dict[int, Any]:
    """Each waiting person's latest France Travail préconisation dated from the month before T0 to `day`."""
    if not episodes:
        return {}
    t0s = {e.person_id: e.t0 for e in episodes}
    rows = conn.execute(_PRECONISATIONS, {"ids": sorted(t0s), "day": day})
    found: dict[int, Any] = {}
    for row in rows:
        if row.event_date >= t0s[row.person_id] - timedelta(days=31):
            found[row.person_id] = row
    return found


@dataclass(frozen=True)
class WorklistPage:
    total: int  # every person waiting that the filters keep, whatever the page
    entries: list[WorklistEntry]


def _waiting(overdue: bool | None, commune: bool, organisme: bool, legal: LegalFilter | None = None) -> Any:
    """The waiting persons' episodes the filters keep (`EPISODE_COLUMNS`), with named parameters: `deps`,
    `day`, `horizon` (the day + the warning days), `latest_overdue` (`latest_t0_overdue`), `commune`,
    `organisme`: built once per choice of filters (`_statements`)."""
    ee = EntryEpisode
    day: Any = bindparam("day", type_=Date())  # waiting_on reads a date or its parameter alike
    query: Any = select(*EPISODE_COLUMNS).where(
        ee.departement_code.in_(bindparam("deps", expanding=True)), waiting_on(ee, day)
    )
    horizon = bindparam("horizon", type_=Date())
    if legal == "past":  # `rules.deadlines.legal_deadline_past`
        query = query.where(ee.legal_deadline <= day)
    elif legal == "near":  # `rules.deadlines.legal_deadline_near`
        query = query.where(ee.legal_deadline > day, ee.legal_deadline <= horizon)
    elif legal == "past_or_near":
        query = query.where(ee.legal_deadline <= horizon)
    latest_overdue = bindparam("latest_overdue", type_=Date())
    if overdue is True:
        query = query.where(ee.t0 <= latest_overdue)
    elif overdue is False:
        query = query.where(ee.t0 > latest_overdue)
    if commune:
        query = query.where(ee.commune == bindparam("commune"))
    if organisme:
        query = query.where(ee.caf_msa == bindparam("organisme"))
    return query


# (page, count) statements per choice of filters and order, built once: building a statement and its cache
# key cost ~0.2 ms of CPU each, more than a worklist page's run of it (issue #27)
_PAGES: dict[tuple[Any, ...], tuple[Any, Any]] = {}


def _statements(overdue: bool | None, commune: bool, organisme: bool, legal: LegalFilter | None, sort: Sort) -> Any:
    key = (overdue, commune, organisme, legal, sort)
    found = _PAGES.get(key)
    if found is None:
        query = _waiting(overdue, commune, organisme, legal)
        ee = EntryEpisode
        order: tuple[Any, ...] = (ee.t0, ee.person_id)
        if sort == "legal_deadline":  # those without a legal clock (NULL) last, on SQLite as on PostgreSQL
            order = (ee.legal_deadline.is_(None), ee.legal_deadline, ee.t0, ee.person_id)
        # one statement for the page, its persons and the total (a window's count is taken before LIMIT):
        # three statements' cost in SQLAlchemy and the driver was a share of the page's (issue #27)
        person_columns = [c.label(f"person_{c.key}") for c in PERSON_COLUMNS]
        page = (
            query.add_columns(*person_columns, func.count().over().label("worklist_total"))
            .join(Person, Person.id == ee.person_id)
            .order_by(*order)
            .limit(bindparam("limit"))
            .offset(bindparam("offset"))
        )
        found = _PAGES[key] = (page, select(func.count()).select_from(query.subquery()))
    return found


def worklist_page(
    session: Session,
    departements: Sequence[str],
    day: date,
    *,
    overdue: bool | None = None,
    commune: str | None = None,
    organisme: Literal["CAF", "MSA"] | None = None,
    sort: Sort = "t0",
    legal: LegalFilter | None = None,
    warning_days: int = 7,
    limit: int = 50,
    offset: int = 0,
) -> WorklistPage:
    """The persons of these départements waiting on `day`, by T0 then person (`sort="legal_deadline"`: by
    legal deadline, those without a legal clock last, then T0 and person): one page, and the total.
    `overdue`: only those past the 15-day deadline (True) or not yet (False); `legal`: only those whose
    legal deadline is past, or within `warning_days` days, or either."""
    conn = session.connection()
    page_statement, count_statement = _statements(overdue, commune is not None, organisme is not None, legal, sort)
    params = {
        "deps": list(departements),
        "day": day,
        "horizon": day + timedelta(days=warning_days),
        "latest_overdue": latest_t0_overdue(day),
        "commune": commune,
        "organisme": organisme,
    }
    rows = conn.execute(page_statement, params | {"limit": limit, "offset": offset}).all()
    if rows:
        total = rows[0].worklist_total
    elif offset:  # a page past the end: the total counted alone
        total = conn.execute(count_statement, params).scalar() or 0
    else:
        total = 0
    cut = len(EPISODE_COLUMNS)
    page = [(_Episode(*row[:cut]), PersonRow(*row[cut : cut + len(PERSON_COLUMNS)])) for row in rows]
    ids = [e.person_id for e, _p in page]
    states = states_as_of(conn, ids, day, STATE_COLUMNS)  # the one reading of a state as of a day
    preconisations = _preconisations(conn, [e for e, _p in page], day)
    entries = [WorklistEntry(e, p, states.get(e.person_id), preconisations.get(e.person_id)) for e, p in page]
    return WorklistPage(total=total, entries=entries)


class _Episode(NamedTuple):  # the columns of EPISODE_COLUMNS, by name
    person_id: int
    departement_code: str
    t0: date
    caf_msa: str | None
    commune: str | None
    invitation_on: date | None
    rdv_orientation_on: date | None
    legal_clock: str | None
    legal_deadline: date | None


class PersonRow(NamedTuple):  # the columns of PERSON_COLUMNS, by name
    id: int
    departement_code: str
    nom: str | None
    prenom: str | None
    date_naissance: date | None
