"""The weekly files for France Travail (seeds/001 Annexes 1 and 4), one per département and ISO week.

CSV for French Excel: `;`, UTF-8 with a BOM, CRLF line ends, dates `jj/mm/aaaa`; the columns and their
format are in docs/exports.md. Built from the dated facts as of the week's end (Sunday), in a stable order
and with no clock in the content: building the same week twice gives the same bytes.

- `flux` (Annexe 1): the persons oriented during the week (an entry episode whose orientation is dated in
  it), with their identity (the NIR decrypted here only, never logged), contacts (only where the person
  consented: app.flux.instruction_facts.france_travail_contacts), address, organisme and orientation.
- `pilotage` (Annexe 4): one row per nouvel entrant (entry episode notified on or before the week's end:
  `STOCK` 0) and per person of the initial stock (`STOCK` 1), with each step's date as of the week's end.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Connection, func, select

from app.db import one_of
from app.errors import ExitCode, Unprocessable
from app.flux.instruction_facts import france_travail_contacts
from app.models import EntryEpisode, FluxFile, InstructionRecord, OrientationEvent, Person
from app.orientation.episodes import FT_SOURCE, as_rule_event, as_rule_events, oriented_by
from app.persons.states import states_as_of
from app.rules.episodes import (
    CE,
    CONTRAT_ENGAGEMENT,
    FT_NOT_ORIENTING,
    HELD,
    NOT_CANCELLED,
    ORIENTED,
    event_order,
    known_as_of,
    last_ce_as_of,
    last_cer_as_of,
    last_contract_as_of,
    latest_as_of,
    outcome_as_of,
)
from app.security.nir import NirProtector, nir_key
from app.settings import Settings

WEEK_RE = re.compile(r"^(\d{4})-W(\d{2})$")
PAGE = 1000

FLUX_COLUMNS = (
    "CIVILITE",
    "NOM",
    "PRENOM",
    "DATE_NAISSANCE",
    "NIR",
    "SEXE",
    "NATIONALITE",
    "STATUT",
    "TELEPHONE",
    "COURRIEL",
    "ADRESSE",
    "CODE_POSTAL",
    "COMMUNE",
    "DATE_ENTREE_RSA",
    "ORGANISME_PAYEUR",
    "NUMERO_ORGANISME",
    "ORIENTATION",
    "TYPE_PARCOURS",
    "REFERENT_OU_STRUCTURE",
    "DATE_ORIENTATION",
)
PILOTAGE_COLUMNS = (
    "ID_CAF",
    "ROLE_CAF",
    "COMMUNE",
    "DATE_NAISSANCE",
    "DATE_NOTIFICATION_DEPARTEMENT",
    "DATE_INVITATION",
    "DATE_RDV_ORIENTATION",
    "DATE_ORIENTATION",
    "DATE_1ER_RDV_ACCOMPAGNEMENT",
    "STRUCTURE_REFERENTE",
    "C_TYPEPARCOURS",
    "DATE_CER",
    "TYPE_CONTRAT",
    "DEPARTEMENT",
    "DEPARTEMENT_CODE_CAF",
    "STOCK",
    # not in the convention's Annexe 4 (issue #25): who oriented, DEPARTEMENT or FRANCE_TRAVAIL (docs/exports.md)
    "ORIENTE_PAR",
)
# ORIENTE_PAR: an orientation or a référent by the Département's side; an orientation France Travail decided
ORIENTE_PAR = {"orientation": "DEPARTEMENT", "referent": "DEPARTEMENT", "france_travail": "FRANCE_TRAVAIL"}
CIVILITE = {"MR": "M.", "MME": "Mme", "MLE": "Mme"}
STATUT = {"DEM": "DEMANDEUR", "CJT": "CONJOINT"}
PARCOURS = {"social": "SOCIAL", "socio-professionnel": "SOCIOPROFESSIONNEL", "professionnel": "PROFESSIONNEL"}
# A contrat d'engagement signed with one of these is written PPAE (the employment side: France Travail, and the
# organismes référents of the professional parcours, Mission locale and Cap emploi); with any other (the
# Département, a CCAS...), CER (docs/exports.md, "TYPE_CONTRAT and the contrat d'engagement").
EMPLOYMENT_SIDE = frozenset({"FRANCE_TRAVAIL", "MISSION_LOCALE", "CAP_EMPLOI"})


def type_contrat(contrat: tuple[date, Any] | None, ce: tuple[date, Any] | None, settings: Settings) -> str:
    """TYPE_CONTRAT for the contract in force (`last_contract_as_of`): CER or PPAE as recorded; a contrat
    d'engagement (kind CE, `ce` its latest (date, organisme)) as PPAE or CER by its organisme, or CE if
    PASSERELLE_PILOTAGE_CONTRAT_CE_CODE asks for it."""
    if contrat is None:
        return ""
    if contrat[1] != CE:
        return contrat[1] or ""
    if settings.pilotage_contrat_ce_code == "CE":
        return "CE"
    return "PPAE" if ce is not None and ce[1] in EMPLOYMENT_SIDE else "CER"


class WeekError(Unprocessable, ValueError):
    """A week that cannot be exported: malformed, or not ended yet."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class Week:
    label: str  # 2024-W10
    monday: date
    sunday: date

    @classmethod
    def parse(cls, text: str, today: date) -> Week:
        m = WEEK_RE.match(text.strip())
        if not m:
            raise WeekError(f"week {text!r}: expected an ISO week such as 2024-W10")
        try:
            monday = date.fromisocalendar(int(m[1]), int(m[2]), 1)
        except ValueError:
            raise WeekError(f"week {text!r} does not exist") from None
        week = cls(f"{int(m[1]):04d}-W{int(m[2]):02d}", monday, monday + timedelta(days=6))
        if week.sunday >= today:
            raise WeekError(
                f"week {week.label} has not ended (it ends on Sunday {week.sunday:%d/%m/%Y}): "
                "a week is exported once it is over"
            )
        return week

    @classmethod
    def last_complete(cls, today: date) -> Week:
        return cls.of(today - timedelta(days=7))

    @classmethod
    def of(cls, day: date) -> Week:
        """The ISO week holding `day`."""
        monday = day - timedelta(days=day.weekday())
        year, number, _ = monday.isocalendar()
        return cls(f"{year:04d}-W{number:02d}", monday, monday + timedelta(days=6))


def check_exportable(conn: Connection, departement: str, week: Week, today: date) -> None:
    """A week a département's files can be built for: over (the app's clock), and not before the week of the
    first flux file it received (issue #23: `0001-W01` was built and mailed, two empty files). WeekError
    (422, exit code 2) in French, said to the operator as it is."""
    if week.sunday >= today:
        raise WeekError(
            f"la semaine {week.label} n'est pas terminée (elle finit le dimanche {week.sunday:%d/%m/%Y}) : "
            "une semaine s'exporte une fois finie"
        )
    ft = FluxFile.__table__.c
    first = conn.scalar(
        select(func.min(ft.received_on)).where(ft.departement_code == departement, ft.status == "applied")
    )
    if first is None:
        raise WeekError(
            f"le département {departement} n'a reçu aucun fichier de flux : aucune semaine à exporter",
            code="no_flux_yet",
        )
    start = Week.of(first)
    if week.monday < start.monday:
        raise WeekError(
            f"la semaine {week.label} précède le premier fichier de flux du département {departement} "
            f"(reçu le {first:%d/%m/%Y}, semaine {start.label}) : rien à exporter pour elle"
        )


def _streamed(conn: Connection) -> Connection:
    """Rows fetched a page at a time (a server-side cursor on PostgreSQL): memory stays flat whatever the
    département's size; the other queries of a page run on the same connection meanwhile."""
    return conn.execution_options(stream_results=True, yield_per=PAGE)


def fr(day: date | None) -> str:
    return day.strftime("%d/%m/%Y") if day else ""


def _nationalities(conn: Connection, ids: list[int], day: date) -> dict[int, str]:
    t = InstructionRecord.__table__.c
    rank = func.row_number().over(partition_by=t.person_id, order_by=(t.received_on.desc(), t.id.desc()))
    inner = (
        select(t.person_id, t.nationalite, rank.label("rank"))
        .where(one_of(conn, t.person_id, ids), t.received_on <= day, t.nationalite.is_not(None))
        .subquery()
    )
    return {r.person_id: r.nationalite for r in conn.execute(select(inner).where(inner.c.rank == 1))}


def _full_nir(nir13: str) -> str:
    return f"{nir13}{nir_key(nir13):02d}"


def flux_rows(conn: Connection, settings: Settings, departement: str, week: Week) -> Iterator[list[str]]:
    ee = EntryEpisode.__table__.c
    episodes = _streamed(conn).execute(
        select(ee.person_id, ee.t0, ee.end_on, ee.orientation_on, ee.organisme, ee.type_parcours, ee.structure)
        .where(
            ee.departement_code == departement,
            oriented_by(ee, week.sunday),  # the one as-of reading (rules.outcome_as_of's SQL twin)
            ee.end_on >= week.monday,
        )
        .order_by(ee.person_id, ee.rank)
    )
    protector = NirProtector(settings.encryption_keys, settings.hmac_key)
    for page in episodes.partitions(PAGE):
        ids = sorted({e.person_id for e in page})
        persons = {p.id: p for p in conn.execute(select(Person.__table__).where(one_of(conn, Person.id, ids)))}
        states = states_as_of(conn, ids, week.sunday)
        nationalities = _nationalities(conn, ids, week.sunday)
        for e in page:
            p, s = persons[e.person_id], states.get(e.person_id)
            contacts = france_travail_contacts(conn, e.person_id)
            referent = _referent(conn, e.person_id, week.sunday) or e.structure or ""
            yield [
                CIVILITE.get(p.qual or "", p.qual or ""),
                p.nom or "",
                p.prenom or "",
                fr(p.date_naissance),
                _full_nir(protector.decrypt(p.nir_encrypted)) if p.nir_encrypted else "",
                p.sexe or "",
                nationalities.get(e.person_id, ""),
                STATUT.get(s.role, "") if s is not None else "",
                contacts["telephone"] or "",
                contacts["courriel"] or "",
                (s.adresse or "") if s is not None else "",
                (s.codepos or "") if s is not None else "",
                (s.nomcom or "") if s is not None else "",
                fr((s.ddnatdro or s.dtdemrsa) if s is not None else None),
                (s.fonorg or "") if s is not None else "",
                (s.numorg or "") if s is not None else "",
                e.organisme or "",
                PARCOURS.get(e.type_parcours or "", ""),
                referent,
                fr(e.orientation_on or e.end_on),  # its own date, even before T0 (docs/rules.md, issue #22)
            ]


def _referent(conn: Connection, person_id: int, day: date) -> str | None:
    """The latest référent named by an event on or before `day` (a correction supersedes)."""
    oe = OrientationEvent.__table__.c
    superseded = select(oe.supersedes_id).where(oe.person_id == person_id, oe.supersedes_id.is_not(None))
    row = conn.execute(
        select(oe.referent, oe.structure)
        .where(
            oe.person_id == person_id,
            oe.event_date <= day,
            oe.referent.is_not(None),
            oe.id.not_in(superseded),
        )
        .order_by(oe.event_date.desc(), oe.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return " - ".join(x for x in (row.referent, row.structure) if x)


def pilotage_rows(conn: Connection, settings: Settings, departement: str, as_of: date) -> Iterator[list[str]]:
    """One row per person, as France Travail's base describes each allocataire's path (seed 001, Annexe 4:
    "les données relatives aux caractéristiques des allocataires, à leur parcours d'accompagnement"): the
    nouveaux entrants (STOCK 0), each by their latest entry episode notified on or before `as_of` (their
    current path: an earlier episode ended before it began), then the initial stock (STOCK 1: persons of the
    first load still present and soumis aux droits et devoirs at `as_of`, and not nouveaux entrants since).
    Which fact fills each column, and which wins: docs/exports.md."""
    ee = EntryEpisode.__table__.c
    parcours = settings.ft_orientation_parcours
    latest = func.row_number().over(partition_by=ee.person_id, order_by=(ee.t0.desc(), ee.rank.desc()))
    chosen = (
        select(  # the columns written (not the criteria, a JSON document per episode)
            ee.person_id,
            ee.t0,
            ee.end_on,
            ee.orientation_on,
            ee.outcome,
            ee.invitation_on,
            ee.rdv_orientation_on,
            ee.first_rdv_accompagnement_on,
            ee.structure,
            ee.type_parcours,
            ee.contrats,
            ee.contrats_engagement,
            ee.referents,
            ee.commune,
            ee.oriented_by,
            latest.label("latest"),
        )
        .where(ee.departement_code == departement, ee.t0 <= as_of)
        .subquery()
    )
    episodes = _streamed(conn).execute(
        select(chosen).where(chosen.c.latest == 1).order_by(chosen.c.t0, chosen.c.person_id)
    )
    for page in episodes.partitions(PAGE):
        ids = sorted({e.person_id for e in page})
        born = dict(conn.execute(select(Person.id, Person.date_naissance).where(one_of(conn, Person.id, ids))).all())
        states = states_as_of(conn, ids, as_of)
        for e in page:
            s = states.get(e.person_id)
            oriented = outcome_as_of(e, as_of) == ORIENTED

            def on(day: date | None) -> str:
                return fr(known_as_of(day, as_of))

            birth = born.get(e.person_id)
            referent = latest_as_of(e.referents, as_of)
            contrat = last_contract_as_of(e.contrats, as_of)
            yield [
                (s.matricule or "") if s is not None else "",
                (s.role or "") if s is not None else "",
                e.commune or ((s.numcom or "") if s is not None else ""),
                fr(birth.replace(day=1)) if birth else "",
                fr(e.t0),
                on(e.invitation_on),
                on(e.rdv_orientation_on),
                fr(e.orientation_on or e.end_on) if oriented else "",
                on(e.first_rdv_accompagnement_on),
                ((referent[1] if referent else e.structure) or "") if oriented else "",
                parcours.get(e.type_parcours or "", "") if oriented else "",
                fr(last_cer_as_of(e.contrats, as_of)),
                type_contrat(contrat, last_ce_as_of(e, as_of), settings),
                departement,
                (s.numorg or "") if s is not None and s.fonorg == "CAF" else "",
                "0",
                ORIENTE_PAR.get(e.oriented_by or "", "") if oriented else "",
            ]
    yield from _stock_rows(conn, settings, departement, as_of)


def _stock_rows(conn: Connection, settings: Settings, departement: str, as_of: date) -> Iterator[list[str]]:
    """The initial stock, one row per person, from their events dated on or before `as_of` read with the
    entry episodes' rules (`rules.episodes`: an RDV held, the latest CER, the latest contract)."""
    p = Person.__table__.c
    ids = _streamed(conn).execute(
        select(p.id).where(p.departement_code == departement, p.stock.is_(True)).order_by(p.id)
    )
    oe = OrientationEvent.__table__.c
    for rows in ids.partitions(PAGE):
        page = [r.id for r in rows]
        states = states_as_of(conn, page, as_of)
        born = dict(conn.execute(select(p.id, p.date_naissance).where(one_of(conn, p.id, page))).all())
        ee = EntryEpisode.__table__.c
        entrants = set(  # a stock person who (re-)entered is a row of its episode already
            conn.execute(select(ee.person_id).where(one_of(conn, ee.person_id, page), ee.t0 <= as_of)).scalars()
        )
        superseded = select(oe.supersedes_id).where(oe.supersedes_id.is_not(None))
        events: dict[int, list[Any]] = {}
        for ev in conn.execute(
            select(OrientationEvent.__table__)
            .where(one_of(conn, oe.person_id, page), oe.event_date <= as_of, oe.id.not_in(superseded))
            .order_by(oe.person_id, oe.event_date, oe.id)
        ):
            events.setdefault(ev.person_id, []).append(ev)
        for evs in events.values():  # one day's events in the order the rules take them: by content
            # France Travail's orientations that do not orient (a PRECONISE...) or repeat the platform's are left out
            kept = {e.event_id for e in as_rule_events(evs) if e.type != FT_NOT_ORIENTING}
            evs[:] = [r for r in evs if r.id in kept]
            evs.sort(key=lambda r: event_order(as_rule_event(r)))
        for pid in page:
            s = states.get(pid)
            if s is None or not s.sdd or pid in entrants:
                continue  # not in the active file at that date, or a row of its own as a nouvel entrant
            yield _stock_row(s, born.get(pid), events.get(pid, []), departement, settings)


def _stock_row(s: Any, birth: date | None, evs: list[Any], departement: str, settings: Settings) -> list[str]:
    parcours = settings.ft_orientation_parcours

    def first(kind: str, presences: tuple[str | None, ...] | None = None) -> Any:
        return next((ev for ev in evs if ev.type == kind and (presences is None or ev.presence in presences)), None)

    def last(*kinds: str) -> Any:
        return next((ev for ev in reversed(evs) if ev.type in kinds), None)

    orientation, structure_from = last("orientation"), last("orientation", "referent")
    if structure_from is not None and structure_from.type == "referent":
        structure = structure_from.structure or structure_from.organisme or ""
    else:
        structure = (orientation.structure or "") if orientation is not None else ""
    contrats = [(ev.event_date, ev.contrat_type) for ev in evs if ev.type in ("contrat", CONTRAT_ENGAGEMENT)]
    contrat = last_contract_as_of(contrats, date.max)
    ces = [(ev.event_date, ev.organisme) for ev in evs if ev.type == CONTRAT_ENGAGEMENT]
    return [
        s.matricule or "",
        s.role or "",
        s.numcom or "",
        fr(birth.replace(day=1)) if birth else "",
        "",
        fr(getattr(first("invitation"), "event_date", None)),
        fr(getattr(first("rdv_orientation", NOT_CANCELLED), "event_date", None)),
        fr(getattr(orientation, "event_date", None)),
        fr(getattr(first("rdv_accompagnement", HELD), "event_date", None)),
        structure,
        parcours.get(orientation.type_parcours or "", "") if orientation is not None else "",
        fr(last_cer_as_of(contrats, date.max)),
        type_contrat(contrat, ces[-1] if ces else None, settings),
        departement,
        (s.numorg or "") if s.fonorg == "CAF" else "",
        "1",
        ("FRANCE_TRAVAIL" if orientation.source == FT_SOURCE else "DEPARTEMENT") if orientation is not None else "",
    ]
