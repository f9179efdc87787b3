"""The pilotage tables (issue #15) for the Département's data scientist and staff, and for the State's
reporting (annex 4 emploi of the convention; DREES OARSA for the stock).

Every table is computed for a period (a month `2024-03`, an ISO week `2024-W10`, a quarter `2024-T1`, a
year `2024`, or from/to days) and an `as_of` date: only facts dated on or before `as_of` count (an episode
by its T0, a decision by its date, a file by its reception, a France Travail answer by the day it was
fetched), so a past table is the same whenever it is asked again.

A table is a list of figures in long form, one per indicator and breakdown value:
`(indicateur, dimension, valeur_dimension, valeur)`; the total has dimension `ensemble`. The breakdowns:
organisme référent, structure référente, type de parcours, accompagnement global, CAF/MSA, commune (and
territoire where the Département loaded a mapping), tranche d'âge, sexe, rôle (each as of the person's T0).
Labels are the official French ones (`LABELS`), never code names.
"""

from __future__ import annotations

import csv
import io
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, or_, select

from app.errors import ExitCode, NotConfigured, Unprocessable
from app.models import EntryEpisode, FluxFile, FtIdentity, FtSnapshot, Person, PersonState
from app.rules.episodes import add_months

TARGET_15_DAYS = 1.0  # the convention's objective: every nouvel entrant oriented within 15 days
ENSEMBLE = "ensemble"
DIMENSIONS = (
    "organisme",
    "structure",
    "type_parcours",
    "accompagnement_global",
    "caf_msa",
    "commune",
    "territoire",
    "tranche_age",
    "sexe",
    "role",
)
DROIT_OUVERT = ("2", "3", "4")  # ETATDOSRSA: droit ouvert (versable, suspendu, versement suspendu)

LABELS: dict[str, str] = {
    # indicators
    "nouveaux_entrants": "Nouveaux entrants",
    "orientes": "Orientés",
    "orientes_15j": "Orientés en 15 jours ou moins",
    "taux_15j": "Taux d'orientation en 15 jours",
    "orientes_1mois": "Orientés en un mois ou moins",
    "taux_1mois": "Taux d'orientation en un mois",
    "delai_moyen_jours": "Délai moyen d'orientation (jours)",
    "delai_median_jours": "Délai médian d'orientation (jours)",
    "orientes_par_delai": "Orientés, par délai en jours",
    "en_attente": "En attente d'orientation",
    "en_attente_par_anciennete": "En attente, par ancienneté",
    "sortis_avant_orientation": "Sortis avant orientation",
    "absents_rdv_orientation": "Orientés absents à leur rendez-vous d'orientation",
    "avec_rdv_orientation": "Orientés avec un rendez-vous d'orientation",
    "taux_absence_rdv": "Taux d'absence au rendez-vous d'orientation",
    "fichiers_recus": "Fichiers reçus",
    "jours_de_reception": "Jours de réception",
    "receptions_par_semaine": "Réceptions par semaine",
    "ecart_median_jours": "Écart médian entre deux réceptions (jours)",
    "ecart_max_jours": "Écart maximal entre deux réceptions (jours)",
    "dernier_fichier_recu": "Dernier fichier reçu le",
    "ecart_long_jours": "Écart de plus de N jours (jours)",
    "soumis_droits_devoirs": "Soumis aux droits et devoirs",
    "orientes_stock": "Orientés (organisme référent unique)",
    "non_orientes_stock": "Non orientés",
    "part_orientes_stock": "Part des orientés",
    "part_renseignee": "Part renseignée",
    "renseignes": "Renseignés",
    "orientes_statut_ft": "Orientés, par statut France Travail",
    # dimensions
    ENSEMBLE: "Ensemble",
    "organisme": "Organisme référent",
    "structure": "Structure référente",
    "type_parcours": "Type de parcours",
    "accompagnement_global": "Accompagnement global",
    "caf_msa": "Organisme payeur",
    "commune": "Commune",
    "territoire": "Territoire",
    "tranche_age": "Tranche d'âge",
    "sexe": "Sexe",
    "role": "Rôle",
    "delai_jours": "Délai (jours)",
    "anciennete": "Ancienneté de l'attente",
    "semaine": "Semaine",
    "ecart_du": "Écart commençant le",
    "donnee": "Donnée",
    "statut_ft": "Statut France Travail",
}
VALUE_LABELS: dict[str, dict[str, str]] = {
    "organisme": {
        "FRANCE_TRAVAIL": "France Travail",
        "DEPARTEMENT": "Département",
        "MISSION_LOCALE": "Mission locale",
        "CAP_EMPLOI": "Cap emploi",
        "CCAS": "CCAS",
        "SPIP": "SPIP",
        "AUTRE": "Autre",
        "non_oriente": "Pas (encore) orienté",
        "non_precise": "Non précisé",
    },
    "type_parcours": {
        "social": "Social",
        "socio-professionnel": "Socio-professionnel",
        "professionnel": "Professionnel",
        "non_oriente": "Pas (encore) orienté",
    },
    "accompagnement_global": {"oui": "Oui", "non": "Non", "non_precise": "Non précisé"},
    "caf_msa": {"CAF": "CAF", "MSA": "MSA", "non_precise": "Non précisé"},
    "sexe": {"1": "Homme", "2": "Femme", "non_precise": "Non précisé"},
    "role": {"DEM": "Demandeur", "CJT": "Conjoint", "ENF": "Enfant", "AUT": "Autre", "non_precise": "Non précisé"},
    "donnee": {
        "identifiant_ft": "Identifiant France Travail",
        "identifiant_rsa": "Identifiant RSA (numéro de demande)",
        "date_ouverture_droit": "Date d'ouverture de droit",
        "date_notification": "Date de notification (fichier CAF/MSA)",
        "date_entree": "Date d'entrée (T0)",
        "date_rdv_orientation": "Date du rendez-vous d'orientation",
        "donnees_diagnostic": "Données du diagnostic",
        "type_parcours": "Type de parcours",
        "dates_rdv_accompagnement": "Date du premier rendez-vous d'accompagnement",
    },
    "statut_ft": {
        "Inscrit": "Inscrit",
        "Identifié": "Identifié",
        "Cessé": "Cessé",
        "Radié": "Radié",
        "inconnu": "Inconnu de France Travail",
        "non_interroge": "Pas encore interrogé",
    },
}
AGE_BANDS = (
    (0, 24, "moins de 25 ans"),
    (25, 29, "25-29 ans"),
    (30, 39, "30-39 ans"),
    (40, 49, "40-49 ans"),
    (50, 59, "50-59 ans"),
    (60, 200, "60 ans et plus"),
)
WAITING_BANDS = (
    (0, 7, "0-7 jours"),
    (8, 15, "8-15 jours"),
    (16, 30, "16-30 jours"),
    (31, 60, "31-60 jours"),
    (61, 10**6, "plus de 60 jours"),
)


def month_of(day: date) -> str:
    """`YYYY-MM` of a day, the year on four digits whatever it is (strftime writes year 467 as `467`)."""
    return f"{day.year:04d}-{day.month:02d}"


class PeriodError(Unprocessable, ValueError):
    """A period that cannot be read or makes no sense; the message says the forms accepted."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class Period:
    start: date
    end: date
    label: str

    @staticmethod
    def parse(value: str | None, start: date | None = None, end: date | None = None) -> Period:
        """`2024-03` (month), `2024-W10` (ISO week), `2024-T1` or `2024-Q1` (quarter), `2024` (year); or
        `start` and `end` days (custom). Years before 1900 are refused (no RSA then; and a date arithmetic
        that would leave the calendar)."""
        try:
            period = Period._parse(value, start, end)
        except (ValueError, OverflowError) as exc:  # year 0, or arithmetic out of the calendar
            if isinstance(exc, PeriodError):
                raise
            raise PeriodError(f"the period {value or ''} is before 1900 or out of the calendar") from None
        if period.start.year < 1900:
            raise PeriodError(f"the period {period.label} starts before 1900")
        return period

    @staticmethod
    def _parse(value: str | None, start: date | None, end: date | None) -> Period:
        if value:
            text = value.strip().upper()
            if m := re.fullmatch(r"(\d{4})-(\d{2})", text):
                year, month = int(m[1]), int(m[2])
                if not 1 <= month <= 12:
                    raise PeriodError(f"no month {month}")
                first = date(year, month, 1)
                return Period(first, add_months(first, 1) - timedelta(days=1), text)
            if m := re.fullmatch(r"(\d{4})-W(\d{2})", text):
                try:
                    monday = date.fromisocalendar(int(m[1]), int(m[2]), 1)
                except ValueError as exc:
                    raise PeriodError(f"no ISO week {text}") from exc
                return Period(monday, monday + timedelta(days=6), text)
            if m := re.fullmatch(r"(\d{4})-[TQ]([1-4])", text):
                first = date(int(m[1]), 3 * int(m[2]) - 2, 1)
                return Period(first, add_months(first, 3) - timedelta(days=1), f"{m[1]}-T{m[2]}")
            if m := re.fullmatch(r"\d{4}", text):
                return Period(date(int(text), 1, 1), date(int(text), 12, 31), text)
            raise PeriodError(
                f"period {value!r}: write a month 2024-03, an ISO week 2024-W10, a quarter 2024-T1, a year 2024"
            )
        if start is None or end is None:
            raise PeriodError("give a period (2024-03, 2024-W10, 2024-T1, 2024) or both from and to days")
        if end < start:
            raise PeriodError("the period ends before it starts")
        if (end - start).days > 3660:
            raise PeriodError("the period is longer than ten years")
        return Period(start, end, f"{start.isoformat()}_{end.isoformat()}")


@dataclass
class Table:
    name: str
    title: str
    period: Period
    as_of: date
    departements: list[str]
    figures: list[tuple[str, str, str, Any]] = field(default_factory=list)  # indicator, dimension, value, figure
    notes: list[str] = field(default_factory=list)

    def add(self, indicator: str, value: Any, dimension: str = ENSEMBLE, key: str = ENSEMBLE) -> None:
        self.figures.append((indicator, dimension, key, value))

    def value(self, indicator: str, dimension: str = ENSEMBLE, key: str = ENSEMBLE) -> Any:
        for ind, dim, k, v in self.figures:
            if (ind, dim, k) == (indicator, dimension, key):
                return v
        raise KeyError((indicator, dimension, key))

    def as_dict(self, names: dict[str, str] | None = None) -> dict[str, Any]:
        return {
            "table": self.name,
            "titre": self.title,
            "periode": self.period.label,
            "du": self.period.start.isoformat(),
            "au": self.period.end.isoformat(),
            "as_of": self.as_of.isoformat(),
            "departements": self.departements,
            "notes": self.notes,
            "figures": [
                {
                    "indicateur": ind,
                    "libelle_indicateur": LABELS.get(ind, ind),
                    "dimension": dim,
                    "libelle_dimension": LABELS.get(dim, dim),
                    "valeur_dimension": key,
                    "libelle_valeur": value_label(dim, key, names),
                    "valeur": value,
                }
                for ind, dim, key, value in self.figures
            ],
        }


def value_label(dimension: str, key: str, names: dict[str, str] | None = None) -> str:
    if dimension == ENSEMBLE:
        return "Ensemble"
    if dimension == "commune" and names:
        return names.get(key, key)
    if dimension == "tranche_age" or dimension == "anciennete":
        return key
    return VALUE_LABELS.get(dimension, {}).get(key, key)


# -- the persons counted: entry episodes seen from as_of ----------------------------------------------------


@dataclass
class Row:
    person_id: int
    t0: date
    decided: str | None  # oriente | sorti_avant_orientation | None (waiting as of as_of)
    end_on: date | None
    delay_days: int | None
    within_15_days: bool
    within_one_month: bool
    rdv_absent: bool
    rdv_on: date | None
    accompagnement_on: date | None
    t0_file_id: int | None
    dims: dict[str, str]
    numdemrsa: bool = False  # the T0 file gave a demand number
    ddnatdro: bool = False  # ... and a right-opening date


def _age_band(born: date | None, on: date) -> str:
    if born is None:
        return "non précisé"
    age = on.year - born.year - ((on.month, on.day) < (born.month, born.day))
    return next(label for lo, hi, label in AGE_BANDS if lo <= age <= hi)


def _band(days: int, bands: Iterable[tuple[int, int, str]]) -> str:
    return next(label for lo, hi, label in bands if lo <= days <= hi)


def episodes(
    conn: Connection, departements: list[str], period: Period, as_of: date, territories: dict[str, str] | None = None
) -> list[Row]:
    """The nouveaux entrants of the period (T0 in it, on or before as_of), each with its outcome as known on
    as_of and its breakdown values (the role and commune of the file that made it enter)."""
    ee, p, ps = EntryEpisode.__table__.c, Person.__table__.c, PersonState.__table__.c
    in_period = (
        ee.departement_code.in_(departements),
        ee.t0 >= period.start,
        ee.t0 <= min(period.end, as_of),
    )
    # what the file that made each person enter said of them: one plain join, read beside the episodes (a
    # subquery per episode, or a grouped subquery joined to them, let the planner choose nested loops over
    # the whole département: 0.9 s for one month on PostgreSQL)
    ee_table = EntryEpisode.__table__
    at_t0: dict[tuple[int, int], tuple[str | None, bool, bool]] = {}
    for pid, fid, role, numdemrsa, ddnatdro in conn.execute(
        select(ps.person_id, ps.file_id, ps.role, ps.numdemrsa, ps.ddnatdro)
        .join(ee_table, (ee.person_id == ps.person_id) & (ee.t0_file_id == ps.file_id))
        .where(*in_period)
    ):
        known = at_t0.get((pid, fid))
        at_t0[(pid, fid)] = (min(filter(None, (role, known[0] if known else None)), default=None),
                             bool(numdemrsa) or bool(known and known[1]),
                             ddnatdro is not None or bool(known and known[2]))  # fmt: skip
    rows = conn.execute(
        select(
            ee.person_id,
            ee.t0,
            ee.outcome,
            ee.end_on,
            ee.delay_days,
            ee.within_15_days,
            ee.within_one_month,
            ee.organisme,
            ee.structure,
            ee.type_parcours,
            ee.accompagnement_global,
            ee.caf_msa,
            ee.commune,
            ee.rdv_orientation_absent,
            ee.rdv_orientation_on,
            ee.first_rdv_accompagnement_on,
            ee.t0_file_id,
            p.sexe,
            p.date_naissance,
        )
        .join(Person.__table__, p.id == ee.person_id)
        .where(*in_period)
        .order_by(ee.person_id, ee.t0)
    ).all()
    out = []
    for r in rows:
        role, numdemrsa, ddnatdro = at_t0.get((r.person_id, r.t0_file_id or 0), (None, False, False))
        decided = (
            r.outcome
            if r.end_on is not None and r.end_on <= as_of and r.outcome in ("oriente", "sorti_avant_orientation")
            else None
        )
        oriented = decided == "oriente"
        ag = r.accompagnement_global
        dims = {
            "organisme": (r.organisme or "AUTRE") if oriented else "non_oriente",
            "structure": (r.structure or "non précisée") if oriented else "non_oriente",
            "type_parcours": (r.type_parcours or "non précisé") if oriented else "non_oriente",
            "accompagnement_global": ("oui" if ag else "non") if oriented and ag is not None else "non_precise",
            "caf_msa": r.caf_msa or "non_precise",
            "commune": r.commune or "non précisée",
            "tranche_age": _age_band(r.date_naissance, r.t0),
            "sexe": r.sexe or "non_precise",
            "role": role or "non_precise",
        }
        if territories is not None:
            dims["territoire"] = territories.get(r.commune or "", "non précisé")
        out.append(
            Row(
                r.person_id,
                r.t0,
                decided,
                r.end_on if decided else None,
                r.delay_days if oriented else None,
                bool(oriented and r.within_15_days),
                bool(oriented and r.within_one_month),
                bool(oriented and r.rdv_orientation_absent and r.rdv_orientation_on and r.rdv_orientation_on <= as_of),
                r.rdv_orientation_on if r.rdv_orientation_on and r.rdv_orientation_on <= as_of else None,
                r.first_rdv_accompagnement_on
                if r.first_rdv_accompagnement_on and r.first_rdv_accompagnement_on <= as_of
                else None,
                r.t0_file_id,
                dims,
                numdemrsa,
                ddnatdro,
            )
        )
    return out


def waiting_by_age(conn: Connection, departements: list[str], as_of: date) -> dict[str, int]:
    """Everyone waiting for an orientation on as_of (whatever their T0), by age of the wait: the list the
    dashboard shows, read without computing a whole table."""
    ee = EntryEpisode.__table__.c
    undecided = or_(ee.end_on.is_(None), ee.end_on > as_of, ee.outcome.not_in(("oriente", "sorti_avant_orientation")))
    counts = Counter(
        _band((as_of - t0).days, WAITING_BANDS)
        for t0 in conn.execute(
            select(ee.t0).where(ee.departement_code.in_(departements), ee.t0 <= as_of, undecided)
        ).scalars()
    )
    return {label: counts.get(label, 0) for _lo, _hi, label in WAITING_BANDS}


def _groups(rows: list[Row], dims: Iterable[str]) -> Iterable[tuple[str, str, list[Row]]]:
    """(dimension, value, rows): the whole, then each breakdown value of each dimension asked."""
    yield ENSEMBLE, ENSEMBLE, rows
    for dim in dims:
        by: dict[str, list[Row]] = defaultdict(list)
        for r in rows:
            if dim in r.dims:
                by[r.dims[dim]].append(r)
        for key in sorted(by):
            yield dim, key, by[key]


def _rate(n: int, d: int) -> float | None:
    return round(n / d, 4) if d else None


# -- the tables ---------------------------------------------------------------------------------------------


@dataclass
class Context:
    conn: Connection
    departements: list[str]
    period: Period
    as_of: date
    dims: tuple[str, ...]
    territories: dict[str, str] | None = None
    gap_days: int = 3

    def rows(self) -> list[Row]:
        return episodes(self.conn, self.departements, self.period, self.as_of, self.territories)

    def entrant_ids(self) -> Any:
        """The period's nouveaux entrants, as a subquery (never a list of thousands of ids in the query)."""
        ee = EntryEpisode.__table__.c
        return select(ee.person_id).where(
            ee.departement_code.in_(self.departements),
            ee.t0 >= self.period.start,
            ee.t0 <= min(self.period.end, self.as_of),
        )

    def table(self, name: str) -> Table:
        return Table(name, TITLES[name], self.period, self.as_of, self.departements)


def nouveaux_entrants(ctx: Context) -> Table:
    t = ctx.table("nouveaux-entrants")
    for dim, key, group in _groups(ctx.rows(), ctx.dims):
        t.add("nouveaux_entrants", len(group), dim, key)
    return t


def delais_orientation(ctx: Context, rows: list[Row] | None = None) -> Table:
    """`rows`: the period's episodes when the caller has read them already (the dashboard reads twelve months
    at once, then makes each month's table from them)."""
    t = ctx.table("delais-orientation")
    rows = ctx.rows() if rows is None else rows
    for dim, key, group in _groups(rows, ctx.dims):
        oriented = [r for r in group if r.decided == "oriente"]
        delays = [r.delay_days for r in oriented if r.delay_days is not None]
        n15 = sum(r.within_15_days for r in oriented)
        n1m = sum(r.within_one_month for r in oriented)
        t.add("nouveaux_entrants", len(group), dim, key)
        t.add("orientes", len(oriented), dim, key)
        t.add("orientes_15j", n15, dim, key)
        t.add("taux_15j", _rate(n15, len(group)), dim, key)
        t.add("orientes_1mois", n1m, dim, key)
        t.add("taux_1mois", _rate(n1m, len(group)), dim, key)
        t.add("delai_moyen_jours", round(statistics.mean(delays), 1) if delays else None, dim, key)
        t.add("delai_median_jours", statistics.median(delays) if delays else None, dim, key)
        t.add("en_attente", sum(1 for r in group if r.decided is None), dim, key)
        t.add("sortis_avant_orientation", sum(1 for r in group if r.decided == "sorti_avant_orientation"), dim, key)
    by_delay = Counter(r.delay_days for r in rows if r.decided == "oriente" and r.delay_days is not None)
    for day in range(0, max(by_delay, default=-1) + 1):
        t.add("orientes_par_delai", by_delay.get(day, 0), "delai_jours", str(day))
    waiting = Counter(_band((ctx.as_of - r.t0).days, WAITING_BANDS) for r in rows if r.decided is None)
    for _lo, _hi, label in WAITING_BANDS:
        t.add("en_attente_par_anciennete", waiting.get(label, 0), "anciennete", label)
    return t


def absents_rdv(ctx: Context) -> Table:
    t = ctx.table("absents-rdv")
    for dim, key, group in _groups(ctx.rows(), ctx.dims):
        oriented = [r for r in group if r.decided == "oriente"]
        with_rdv = [r for r in oriented if r.rdv_on is not None]
        absent = sum(r.rdv_absent for r in oriented)
        t.add("orientes", len(oriented), dim, key)
        t.add("avec_rdv_orientation", len(with_rdv), dim, key)
        t.add("absents_rdv_orientation", absent, dim, key)
        t.add("taux_absence_rdv", _rate(absent, len(with_rdv)), dim, key)
    return t


def transmission(ctx: Context) -> Table:
    """How often the CAF/MSA transmitted (annex 4), from the beneficiary files applied, by reception day."""
    t = ctx.table("transmission")
    ff = FluxFile.__table__.c
    end = min(ctx.period.end, ctx.as_of)
    files = ctx.conn.execute(
        select(ff.received_on, ff.fonorg).where(
            ff.departement_code.in_(ctx.departements),
            ff.status == "applied",
            ff.nature == "D",
            ff.received_on >= ctx.period.start,
            ff.received_on <= end,
        )
    ).all()
    for who in ("ensemble", "CAF", "MSA"):
        chosen = [f for f in files if who == "ensemble" or f.fonorg == who]
        dim, key = (ENSEMBLE, ENSEMBLE) if who == "ensemble" else ("caf_msa", who)
        days = sorted({f.received_on for f in chosen})
        gaps = [(b - a).days for a, b in pairwise(days)]
        weeks = max(1.0, ((end - ctx.period.start).days + 1) / 7)
        t.add("fichiers_recus", len(chosen), dim, key)
        t.add("jours_de_reception", len(days), dim, key)
        t.add("receptions_par_semaine", round(len(days) / weeks, 2), dim, key)
        t.add("ecart_median_jours", statistics.median(gaps) if gaps else None, dim, key)
        t.add("ecart_max_jours", max(gaps) if gaps else None, dim, key)
        t.add("dernier_fichier_recu", days[-1].isoformat() if days else None, dim, key)
        if who == "ensemble":
            for a, b in pairwise(days):
                if (b - a).days > ctx.gap_days:
                    t.add("ecart_long_jours", (b - a).days, "ecart_du", a.isoformat())
            weekly = Counter(f"{d.isocalendar()[0]}-W{d.isocalendar()[1]:02d}" for d in days)
            monday = ctx.period.start - timedelta(days=ctx.period.start.weekday())
            while monday <= end:
                label = f"{monday.isocalendar()[0]}-W{monday.isocalendar()[1]:02d}"
                t.add("jours_de_reception", weekly.get(label, 0), "semaine", label)
                monday += timedelta(days=7)
    t.notes.append(f"Écart long : plus de {ctx.gap_days} jours sans fichier reçu.")
    return t


def stock_oarsa(ctx: Context) -> Table:
    """The DREES OARSA-style stock at the period's end (or as_of): persons soumis aux droits et devoirs with
    their right open, and among them those oriented, by organisme référent unique and characteristics."""
    t = ctx.table("stock-oarsa")
    day = min(ctx.period.end, ctx.as_of)
    ps, ee, p = PersonState.__table__.c, EntryEpisode.__table__.c, Person.__table__.c
    from app.flux.order import state_order

    rank = func.row_number().over(partition_by=ps.person_id, order_by=state_order(ps, descending=True))
    latest = (
        select(ps.person_id, ps.present, ps.sdd, ps.etat, ps.role, ps.fonorg, ps.numcom, rank.label("r"))
        .where(ps.departement_code.in_(ctx.departements), ps.received_on <= day)
        .subquery()
    )
    stock = ctx.conn.execute(
        select(latest.c.person_id, latest.c.role, latest.c.fonorg, latest.c.numcom, p.sexe, p.date_naissance)
        .join(Person.__table__, p.id == latest.c.person_id)
        .where(latest.c.r == 1, latest.c.present.is_(True), latest.c.sdd.is_(True), latest.c.etat.in_(DROIT_OUVERT))
    ).all()
    orient_rank = func.row_number().over(partition_by=ee.person_id, order_by=(ee.end_on.desc(), ee.id.desc()))
    decisions = (
        select(ee.person_id, ee.organisme, ee.type_parcours, orient_rank.label("r"))
        .where(ee.departement_code.in_(ctx.departements), ee.outcome == "oriente", ee.end_on <= day)
        .subquery()
    )
    oriented = {r.person_id: r for r in ctx.conn.execute(select(decisions).where(decisions.c.r == 1))}
    rows = []
    for s in stock:
        o = oriented.get(s.person_id)
        dims = {
            "organisme": (o.organisme or "AUTRE") if o else "non_oriente",
            "type_parcours": (o.type_parcours or "non précisé") if o else "non_oriente",
            "caf_msa": s.fonorg or "non_precise",
            "commune": s.numcom or "non précisée",
            "tranche_age": _age_band(s.date_naissance, day),
            "sexe": s.sexe or "non_precise",
            "role": s.role or "non_precise",
        }
        if ctx.territories is not None:
            dims["territoire"] = ctx.territories.get(s.numcom or "", "non précisé")
        rows.append((o is not None, dims))
    dims_asked = [
        d
        for d in ctx.dims
        if d in ("organisme", "type_parcours", "caf_msa", "commune", "territoire", "tranche_age", "sexe", "role")
    ]
    for dim in (ENSEMBLE, *dims_asked):
        by: dict[str, list[bool]] = defaultdict(list)
        for is_oriented, dims in rows:
            by[ENSEMBLE if dim == ENSEMBLE else dims[dim]].append(is_oriented)
        for key in sorted(by):
            flags = by[key]
            t.add("soumis_droits_devoirs", len(flags), dim, key)
            t.add("orientes_stock", sum(flags), dim, key)
            t.add("non_orientes_stock", len(flags) - sum(flags), dim, key)
            t.add("part_orientes_stock", _rate(sum(flags), len(flags)), dim, key)
    t.notes.append(f"Stock au {day.strftime('%d/%m/%Y')} : droit ouvert (états 2, 3, 4), soumis aux droits et devoirs.")
    return t


def end_of_day(day: date) -> datetime:
    """The first instant after `day` (UTC): a fact fetched at a time counts on `day` if it is before this."""
    return datetime.combine(day + timedelta(days=1), time.min, UTC)


def completude(ctx: Context) -> Table:
    """Volet 3: the share of the period's nouveaux entrants for whom each data item the convention lists is
    known as of as_of."""
    t = ctx.table("completude-volet3")
    rows = ctx.rows()
    ids = sorted({r.person_id for r in rows})
    known: dict[str, set[int]] = defaultdict(set)
    if ids:
        fi, fs = FtIdentity.__table__.c, FtSnapshot.__table__.c
        cutoff = end_of_day(ctx.as_of)
        entrants = ctx.entrant_ids()
        found = (fi.person_id.in_(entrants), fi.searched_at < cutoff, fi.outcome.in_(("found", "not_certified")))
        known["identifiant_ft"] = set(ctx.conn.execute(select(fi.person_id).distinct().where(*found)).scalars())
        diagnosed = (fs.person_id.in_(entrants), fs.kind == "diagnostic", fs.no_data.is_(False), fs.fetched_at < cutoff)
        known["donnees_diagnostic"] = set(ctx.conn.execute(select(fs.person_id).distinct().where(*diagnosed)).scalars())
    for r in rows:
        if r.numdemrsa:
            known["identifiant_rsa"].add(r.person_id)
        if r.ddnatdro:
            known["date_ouverture_droit"].add(r.person_id)
        if r.t0_file_id is not None:
            known["date_notification"].add(r.person_id)
        known["date_entree"].add(r.person_id)
        if r.rdv_on is not None:
            known["date_rdv_orientation"].add(r.person_id)
        if r.decided == "oriente" and r.dims["type_parcours"] not in ("non précisé", "non_oriente"):
            known["type_parcours"].add(r.person_id)
        if r.accompagnement_on is not None:
            known["dates_rdv_accompagnement"].add(r.person_id)
    population = {r.person_id for r in rows}
    t.add("nouveaux_entrants", len(population))
    for item in VALUE_LABELS["donnee"]:
        n = len(known[item] & population)
        t.add("renseignes", n, "donnee", item)
        t.add("part_renseignee", _rate(n, len(population)), "donnee", item)
    return t


def statut_france_travail(ctx: Context, rows: list[Row] | None = None) -> Table:
    """Oriented nouveaux entrants of the period by their France Travail status (the latest statut fetched on
    or before as_of), overall and by type de parcours. `rows`: the period's episodes, if already read."""
    t = ctx.table("statut-france-travail")
    rows = [r for r in (ctx.rows() if rows is None else rows) if r.decided == "oriente"]
    ids = sorted({r.person_id for r in rows})
    status: dict[int, str] = {}
    if ids:
        fs = FtSnapshot.__table__.c
        rank = func.row_number().over(partition_by=fs.person_id, order_by=(fs.fetched_at.desc(), fs.id.desc()))
        latest = (
            select(fs.person_id, fs.no_data, fs.data, rank.label("r"))
            .where(fs.person_id.in_(ctx.entrant_ids()), fs.kind == "statut", fs.fetched_at < end_of_day(ctx.as_of))
            .subquery()
        )
        for pid, no_data, data, _r in ctx.conn.execute(select(latest).where(latest.c.r == 1)):
            status[pid] = "inconnu" if no_data or not data else str(data.get("statutDE") or "inconnu")
    for dim, key, group in _groups(rows, [d for d in ctx.dims if d == "type_parcours"] or ["type_parcours"]):
        counts = Counter(status.get(r.person_id, "non_interroge") for r in group)
        t.add("orientes", len(group), dim, key)
        for value in VALUE_LABELS["statut_ft"]:
            t.add(
                "orientes_statut_ft",
                counts.get(value, 0),
                dim if dim != ENSEMBLE else "statut_ft",
                value if dim == ENSEMBLE else f"{key}|{value}",
            )
    return t


TITLES = {
    "nouveaux-entrants": "Nouveaux entrants",
    "delais-orientation": "Délais d'orientation des nouveaux entrants",
    "absents-rdv": "Orientés absents à leur rendez-vous d'orientation",
    "transmission": "Fréquence de transmission des données CAF/MSA",
    "stock-oarsa": "Stock des personnes soumises aux droits et devoirs et orientées (type OARSA)",
    "completude-volet3": "Complétude des données du volet 3",
    "statut-france-travail": "Statut France Travail des personnes orientées",
}
TABLES: dict[str, Callable[[Context], Table]] = {
    "nouveaux-entrants": nouveaux_entrants,
    "delais-orientation": delais_orientation,
    "absents-rdv": absents_rdv,
    "transmission": transmission,
    "stock-oarsa": stock_oarsa,
    "completude-volet3": completude,
    "statut-france-travail": statut_france_travail,
}


# -- commune names and territories --------------------------------------------------------------------------


SMALL_WORDS = {"le", "la", "les", "l", "de", "du", "des", "d", "sur", "sous", "en", "et", "aux", "au", "lès", "lez"}


def commune_title(name: str) -> str:
    """A commune's name as the COG writes it, from the capitals of the CAF files: BAR-LE-DUC -> Bar-le-Duc,
    BELLEVILLE-SUR-MEUSE -> Belleville-sur-Meuse, L'ISLE-EN-RIGAULT -> L'Isle-en-Rigault."""
    parts = re.split(r"([ '\-])", name.strip().lower())
    out = []
    for i, part in enumerate(parts):
        small = (
            part in SMALL_WORDS and i > 0 and not (part in ("l", "d") and i + 1 < len(parts) and parts[i + 1] != "'")
        )
        out.append(part if small or not part or part in " '-" else part[:1].upper() + part[1:])
    return "".join(out)


def commune_names(conn: Connection, departements: list[str], loaded: dict[str, str] | None = None) -> dict[str, str]:
    """INSEE code -> name: the Département's table where it loaded one, else the name the CAF/MSA files give
    (the latest written), in title case."""
    ps = PersonState.__table__.c
    names: dict[str, str] = {}
    for code, name in conn.execute(
        select(ps.numcom, func.max(ps.nomcom))
        .where(ps.departement_code.in_(departements), ps.numcom.is_not(None), ps.nomcom.is_not(None))
        .group_by(ps.numcom)
    ):
        names[code] = commune_title(name)
    names.update(loaded or {})
    return names


def load_communes(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The Département's commune table: CSV `code_insee;nom;territoire` (UTF-8, header line; territoire may
    be empty). Returns (names, territories)."""
    names, territories = {}, {}
    text = path.read_text(encoding="utf-8-sig")
    reader = csv.DictReader(io.StringIO(text), delimiter=";")
    if not reader.fieldnames or not {"code_insee", "nom"} <= {f.strip() for f in reader.fieldnames}:
        raise ValueError(f"{path.name}: the header must be code_insee;nom;territoire")
    for line, row in enumerate(reader, start=2):
        code = (row.get("code_insee") or "").strip()
        if not re.fullmatch(r"\d[\dAB]\d{3}", code):
            raise ValueError(f"{path.name}, line {line}: {code!r} is not an INSEE commune code")
        names[code] = (row.get("nom") or "").strip() or code
        if (row.get("territoire") or "").strip():
            territories[code] = row["territoire"].strip()
    return names, territories


class CommunesFileError(NotConfigured):
    """The Département's commune table cannot be read: the message names the setting and the line."""

    code = "communes_file_invalid"


def commune_table(
    settings: Any, conn: Connection, departements: list[str]
) -> tuple[dict[str, str], dict[str, str] | None]:
    """Commune names (the Département's table if configured, else the CAF/MSA files') and territories (only
    with a table that gives them)."""
    loaded: dict[str, str] = {}
    territories: dict[str, str] | None = None
    if settings.communes_file is not None:
        try:
            loaded, found = load_communes(settings.communes_file)
        except (OSError, ValueError) as exc:
            raise CommunesFileError(f"PASSERELLE_COMMUNES_FILE: {exc}") from None
        territories = found or None
    return commune_names(conn, departements, loaded), territories


def compute(
    conn: Connection,
    name: str,
    departements: list[str],
    period: Period,
    as_of: date,
    dims: tuple[str, ...] = DIMENSIONS,
    territories: dict[str, str] | None = None,
    gap_days: int = 3,
) -> Table:
    if name not in TABLES:
        raise KeyError(name)
    chosen = tuple(d for d in dims if d != "territoire" or territories is not None)
    return TABLES[name](Context(conn, departements, period, as_of, chosen, territories, gap_days))


# -- CSV: long format, French or machine --------------------------------------------------------------------

CSV_COLUMNS = (
    "table",
    "periode",
    "du",
    "au",
    "as_of",
    "departements",
    "indicateur",
    "libelle_indicateur",
    "dimension",
    "libelle_dimension",
    "valeur_dimension",
    "libelle_valeur",
    "valeur",
)


def french_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "oui" if value else "non"
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".").replace(".", ",") if value != int(value) else str(int(value))
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return date.fromisoformat(value).strftime("%d/%m/%Y")
    return str(value)


def _machine(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def to_csv(table: Table, locale: str = "fr", names: dict[str, str] | None = None) -> bytes:
    """One row per figure (long format): `;`, UTF-8 with BOM, CRLF; `fr` writes decimal commas and dates
    jj/mm/aaaa (French Excel), `c` points and ISO dates (pandas, R: `read.csv2` is not needed)."""
    from app.exports.weekly import write_csv

    fmt = french_cell if locale == "fr" else _machine
    data = table.as_dict(names)
    head = [
        data["table"],
        data["periode"],
        fmt(data["du"]),
        fmt(data["au"]),
        fmt(data["as_of"]),
        ",".join(data["departements"]),
    ]
    rows = (
        [
            *head,
            f["indicateur"],
            f["libelle_indicateur"],
            f["dimension"],
            f["libelle_dimension"],
            f["valeur_dimension"],
            f["libelle_valeur"],
            fmt(f["valeur"]),
        ]
        for f in data["figures"]
    )
    out = io.BytesIO()
    write_csv(CSV_COLUMNS, rows, out)
    return out.getvalue()


def filename(table: Table, extension: str = "csv") -> str:
    return f"pilotage_{table.name}_{table.period.label}_au_{table.as_of.isoformat()}.{extension}"
