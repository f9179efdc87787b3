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
Labels are the official French ones (`app.pilotage.labels`), never code names; the persons counted are
read once, by `app.pilotage.population`.
"""

from __future__ import annotations

import io
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from itertools import pairwise
from typing import Any

from sqlalchemy import Connection, func, select

from app.flux.freshness import working_days_between
from app.kit.csv import write_csv
from app.models import EntryEpisode, FluxFile, FtIdentity, FtSnapshot, Person, PersonState
from app.orientation.contracts import transition
from app.orientation.episodes import oriented_by
from app.persons.states import latest_states
from app.pilotage.absences import NO_RDV, accompaniment_by_episode
from app.pilotage.communes import CommunesFileError, commune_names, commune_table, commune_title, load_communes
from app.pilotage.labels import (
    AGE_BANDS,
    DIMENSIONS,
    ENSEMBLE,
    LABELS,
    NOT_GIVEN,
    NOT_ORIENTED,
    TITLES,
    VALUE_LABELS,
    WAITING_BANDS,
    french_cell,
    value_label,
)
from app.pilotage.period import Period, PeriodError, end_of_day, month_of
from app.pilotage.population import Row, age_band, band, episodes, in_period, waiting_by_age
from app.rules.config import DROIT_OUVERT
from app.rules.episodes import (
    CE_IN_FORCE,
    ORIENTED,
    ORIENTED_BY_FRANCE_TRAVAIL,
    add_months,
    contract_after_orientation_as_of,
    contract_deadline_as_of,
    dated_items,
    orientation_as_of,
    satisfies_clock,
)

__all__ = [  # the names callers import from here (the tables' vocabulary lives in the modules above)
    "AGE_BANDS",
    "DIMENSIONS",
    "ENSEMBLE",
    "LABELS",
    "TABLES",
    "TITLES",
    "VALUE_LABELS",
    "WAITING_BANDS",
    "CommunesFileError",
    "Context",
    "Period",
    "PeriodError",
    "Row",
    "Table",
    "commune_names",
    "commune_table",
    "commune_title",
    "compute",
    "delai_legal",
    "delais_orientation",
    "end_of_day",
    "episodes",
    "filename",
    "french_cell",
    "load_communes",
    "month_of",
    "statut_france_travail",
    "to_csv",
    "value_label",
    "waiting_by_age",
]

TARGET_15_DAYS = 1.0  # the convention's objective: every nouvel entrant oriented within 15 days


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


class Rate(float):
    """A rate (a share between 0 and 1, rounded to 4 places) that remembers its numerator and denominator: the
    French CSV writes them beside it (issue #26). A float everywhere else (JSON, comparisons)."""

    numerator: int
    denominator: int

    def __new__(cls, n: int, d: int) -> Rate:
        rate = super().__new__(cls, round(n / d, 4))
        rate.numerator, rate.denominator = n, d
        return rate

    def __reduce__(self) -> tuple[type[Rate], tuple[int, int]]:  # copy, deepcopy, pickle: its two terms
        return (Rate, (self.numerator, self.denominator))


def _rate(n: int, d: int) -> float | None:
    return Rate(n, d) if d else None


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
        return select(EntryEpisode.__table__.c.person_id).where(*in_period(self.departements, self.period, self.as_of))

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
        oriented = [r for r in group if r.decided == ORIENTED]
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
        # issue #25: the orientations France Travail decided (CASF D.262-65-2), apart; counted in `orientes` too
        by_ft = [r for r in oriented if r.oriented_by == ORIENTED_BY_FRANCE_TRAVAIL]
        t.add("orientes_par_france_travail", len(by_ft), dim, key)
        t.add("orientes_par_departement", len(oriented) - len(by_ft), dim, key)
    by_delay = Counter(r.delay_days for r in rows if r.decided == ORIENTED and r.delay_days is not None)
    for day in range(0, max(by_delay, default=-1) + 1):
        t.add("orientes_par_delai", by_delay.get(day, 0), "delai_jours", str(day))
    waiting = Counter(band((ctx.as_of - r.t0).days, WAITING_BANDS) for r in rows if r.decided is None)
    for _lo, _hi, label in WAITING_BANDS:
        t.add("en_attente_par_anciennete", waiting.get(label, 0), "anciennete", label)
    return t


def absents_rdv(ctx: Context) -> Table:
    """The oriented nouveaux entrants who did not come to an RDV, each kind apart. Orientation RDV
    (`population.rdv_orientation`): at least one missed; among them, those never seen at an orientation RDV
    since; apart, the excused. Accompaniment RDV (`absences.accompaniment_by_episode`, read from the events:
    the episode keeps only the first one held): the same three, for the accompaniment RDVs of the episode."""
    t = ctx.table("absents-rdv")
    accompaniment = accompaniment_by_episode(ctx.conn, ctx.entrant_ids(), ctx.as_of)
    for dim, key, group in _groups(ctx.rows(), ctx.dims):
        oriented = [r for r in group if r.decided == ORIENTED]
        with_rdv = [r for r in oriented if r.rdv_on is not None]
        absent = sum(r.rdv_absent for r in oriented)
        t.add("orientes", len(oriented), dim, key)
        t.add("avec_rdv_orientation", len(with_rdv), dim, key)
        t.add("absents_rdv_orientation", absent, dim, key)
        t.add("absents_non_revus_rdv_orientation", sum(r.rdv_never_seen for r in oriented), dim, key)
        t.add("excuses_rdv_orientation", sum(r.rdv_excused for r in oriented), dim, key)
        t.add("taux_absence_rdv", _rate(absent, len(with_rdv)), dim, key)
        acc = [accompaniment.get((r.person_id, r.t0), NO_RDV) for r in oriented]
        with_acc, absent_acc = sum(a.with_rdv for a in acc), sum(a.missed for a in acc)
        t.add("avec_rdv_accompagnement", with_acc, dim, key)
        t.add("absents_rdv_accompagnement", absent_acc, dim, key)
        t.add("absents_non_revus_rdv_accompagnement", sum(a.never_seen for a in acc), dim, key)
        t.add("excuses_rdv_accompagnement", sum(a.excused for a in acc), dim, key)
        t.add("taux_absence_rdv_accompagnement", _rate(absent_acc, with_acc), dim, key)
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
            # the setting's one meaning (app.flux.freshness): working days elapsed, the département's calendar
            calendar = ctx.departements[0] if len(ctx.departements) == 1 else None
            for a, b in pairwise(days):
                if (elapsed := working_days_between(a, b, calendar)) > ctx.gap_days:
                    t.add("ecart_long_jours_ouvres", elapsed, "ecart_du", a.isoformat())
            weekly = Counter(f"{d.isocalendar()[0]}-W{d.isocalendar()[1]:02d}" for d in days)
            monday = ctx.period.start - timedelta(days=ctx.period.start.weekday())
            while monday <= end:
                label = f"{monday.isocalendar()[0]}-W{monday.isocalendar()[1]:02d}"
                t.add("jours_de_reception", weekly.get(label, 0), "semaine", label)
                monday += timedelta(days=7)
    t.notes.append(
        f"Écart long : plus de {ctx.gap_days} jours ouvrés sans fichier reçu (samedis, dimanches et jours "
        "fériés non comptés)."
    )
    return t


def stock_oarsa(ctx: Context) -> Table:
    """The DREES OARSA-style stock at the period's end (or as_of): persons soumis aux droits et devoirs with
    their right open, and among them those oriented, by organisme référent unique and characteristics."""
    t = ctx.table("stock-oarsa")
    day = min(ctx.period.end, ctx.as_of)
    ps, ee, p = PersonState.__table__.c, EntryEpisode.__table__.c, Person.__table__.c
    latest = latest_states(
        (ps.person_id, ps.present, ps.sdd, ps.etat, ps.role, ps.fonorg, ps.numcom),
        as_of=day,
        where=[ps.departement_code.in_(ctx.departements)],
    )
    stock = ctx.conn.execute(
        select(latest.c.person_id, latest.c.role, latest.c.fonorg, latest.c.numcom, p.sexe, p.date_naissance)
        .join(Person.__table__, p.id == latest.c.person_id)
        .where(latest.c.present.is_(True), latest.c.sdd.is_(True), latest.c.etat.in_(DROIT_OUVERT))
    ).all()
    orient_rank = func.row_number().over(partition_by=ee.person_id, order_by=(ee.end_on.desc(), ee.id.desc()))
    decisions = (
        select(ee.person_id, ee.organisme, ee.type_parcours, orient_rank.label("r"))
        .where(ee.departement_code.in_(ctx.departements), oriented_by(ee, day))
        .subquery()
    )
    oriented = {r.person_id: r for r in ctx.conn.execute(select(decisions).where(decisions.c.r == 1))}
    rows = []
    for s in stock:
        o = oriented.get(s.person_id)
        dims = {
            "organisme": (o.organisme or NOT_GIVEN) if o else NOT_ORIENTED,
            "type_parcours": (o.type_parcours or NOT_GIVEN) if o else NOT_ORIENTED,
            "caf_msa": s.fonorg or NOT_GIVEN,
            "commune": s.numcom or NOT_GIVEN,
            "tranche_age": age_band(s.date_naissance, day),
            "sexe": s.sexe or NOT_GIVEN,
            "role": s.role or NOT_GIVEN,
        }
        if ctx.territories is not None:
            dims["territoire"] = ctx.territories.get(s.numcom or "", NOT_GIVEN)
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
    t.notes.append(
        f"Stock au {day.strftime('%d/%m/%Y')} : droit ouvert (états {', '.join(DROIT_OUVERT)}), "
        "soumis aux droits et devoirs."
    )
    return t


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
        if r.decided == ORIENTED and r.dims["type_parcours"] not in (NOT_GIVEN, NOT_ORIENTED):
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
    rows = [r for r in (ctx.rows() if rows is None else rows) if r.decided == ORIENTED]
    ids = sorted({r.person_id for r in rows})
    status: dict[int, str] = {}
    category: dict[int, str] = {}  # categInscriptionCode of the same statut
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
            if not no_data and data:
                code = str(data.get("categInscriptionCode") or "").strip().upper()
                category[pid] = code if code in VALUE_LABELS["categorie_ft"] else "autre"
    for dim, key, group in _groups(rows, [d for d in ctx.dims if d == "type_parcours"] or ["type_parcours"]):
        counts = Counter(status.get(r.person_id, "non_interroge") for r in group)
        if dim == ENSEMBLE:  # issue #25: categories F (social accompaniment) and G (waiting for an orientation)
            categories = Counter(category.get(r.person_id, NOT_GIVEN) for r in group)
            for value in VALUE_LABELS["categorie_ft"]:
                t.add("orientes_categorie_ft", categories.get(value, 0), "categorie_ft", value)
        t.add("orientes", len(group), dim, key)
        for value in VALUE_LABELS["statut_ft"]:
            t.add(
                "orientes_statut_ft",
                counts.get(value, 0),
                dim if dim != ENSEMBLE else "statut_ft",
                value if dim == ENSEMBLE else f"{key}|{value}",
            )
    return t


def contrats_engagement(ctx: Context) -> Table:
    """The contrat d'engagement (issue #25, item 3; docs/pilotage.md): the episodes oriented in the period (their
    orientation dated in it, on or before as_of); among them those with a contract signed within one month of
    it (Code du travail art. D.5411-14-1: the deadline day included), the delay to the first contract signed
    on or after it (mean, median), and those still without a contract answering their latest orientation
    on as_of. A contract is a contrat d'engagement, or a CER / PPAE (`satisfies_clock`). Apart: the transition,
    the persons accompanied before 2025 without a contrat d'engagement on as_of
    (`app.orientation.contracts.transition`), whatever the period."""
    t = ctx.table("contrats-engagement")
    ee = EntryEpisode.__table__.c
    last_day = min(ctx.period.end, ctx.as_of)
    rows = ctx.conn.execute(
        select(ee.person_id, ee.outcome, ee.end_on, ee.organisme, ee.type_parcours, ee.orientations, ee.contrats)
        .where(
            ee.departement_code.in_(ctx.departements),
            ee.outcome == ORIENTED,
            ee.end_on >= ctx.period.start,
            ee.end_on <= last_day,
        )
        .order_by(ee.id)
    ).all()
    lines = []
    for r in rows:
        assert r.end_on is not None
        first = next(
            (on for on, kind in dated_items(r.contrats) if r.end_on <= on <= ctx.as_of and satisfies_clock(kind)),
            None,
        )
        delay = (first - r.end_on).days if first is not None else None
        in_time = first is not None and first <= add_months(r.end_on, 1)
        # the one-month clock is the law's since 2025: one oriented before (and not since) waits in the
        # transition (`transition_sans_ce`), not here
        clock = (orientation_as_of(r, ctx.as_of) or CE_IN_FORCE) >= CE_IN_FORCE
        waiting = clock and contract_after_orientation_as_of(r, ctx.as_of) is None
        deadline = contract_deadline_as_of(r, ctx.as_of)
        late = waiting and deadline is not None and ctx.as_of > deadline
        dims = {"organisme": r.organisme or NOT_GIVEN, "type_parcours": r.type_parcours or NOT_GIVEN}
        lines.append((dims, delay, in_time, waiting, late))
    for dim in (ENSEMBLE, *[d for d in ctx.dims if d in ("organisme", "type_parcours")]):
        by: dict[str, list[Any]] = defaultdict(list)
        for line in lines:
            by[ENSEMBLE if dim == ENSEMBLE else line[0][dim]].append(line)
        if dim == ENSEMBLE and not by:
            by[ENSEMBLE] = []
        for key in sorted(by):
            group = by[key]
            delays = [g[1] for g in group if g[1] is not None]
            n1m = sum(1 for g in group if g[2])
            t.add("orientes_periode", len(group), dim, key)
            t.add("contrats_signes", len(delays), dim, key)
            t.add("contrats_signes_1mois", n1m, dim, key)
            t.add("taux_contrat_1mois", _rate(n1m, len(group)), dim, key)
            t.add("delai_moyen_contrat_jours", round(statistics.mean(delays), 1) if delays else None, dim, key)
            t.add("delai_median_contrat_jours", statistics.median(delays) if delays else None, dim, key)
            t.add("en_attente_contrat", sum(1 for g in group if g[3]), dim, key)
            t.add("en_attente_contrat_hors_delai", sum(1 for g in group if g[4]), dim, key)
    t.add("transition_sans_ce", len(transition(ctx.conn, ctx.departements, ctx.as_of)))
    t.notes.append(
        "Contrat : contrat d'engagement, ou CER / PPAE (signé avant le 1er janvier 2025). Délai : un mois à compter "
        "de la notification de l'orientation, jour d'échéance compris ; une réorientation ouvre un nouveau délai."
    )
    t.notes.append(
        f"Transition : personnes accompagnées avant le 1er janvier 2025, toujours soumises aux droits et devoirs "
        f"et suivies au {ctx.as_of.strftime('%d/%m/%Y')}, sans contrat d'engagement (échéance : "
        "PASSERELLE_CE_TRANSITION_DEADLINE, le 1er janvier 2027 par défaut)."
    )
    return t


FRANCE_TRAVAIL = "france_travail"  # `oriented_by` of an orientation France Travail decided (issue #25, item 2)


def delai_legal(ctx: Context, rows: list[Row] | None = None) -> Table:
    """The legal deadline of CASF art. D.262-65-2 (décret n° 2024-1244), beside the convention's delays: the
    period's nouveaux entrants whose T0 file brought the opening or the transfer of the right (their
    `legal_deadline` = T0 + 42 days), those oriented by the Département within the six weeks (decided before
    the legal deadline), after them, by France Travail, and those still waiting on as_of, within or past the
    six weeks. As of as_of like every table: a decision dated after as_of is still waiting. `rows`: the
    period's episodes, if already read (the dashboard)."""
    t = ctx.table("delai-legal")
    rows = ctx.rows() if rows is None else rows
    covered = [r for r in rows if r.legal_deadline is not None]
    for dim, key, group in _groups(covered, ctx.dims):
        oriented = [r for r in group if r.decided == ORIENTED]
        by_ft = [r for r in oriented if r.oriented_by == FRANCE_TRAVAIL]
        by_cd = [r for r in oriented if r.oriented_by != FRANCE_TRAVAIL]
        in_time = sum(1 for r in by_cd if r.end_on is not None and r.legal_deadline and r.end_on < r.legal_deadline)
        waiting = [r for r in group if r.decided is None]
        past = sum(1 for r in waiting if r.legal_deadline and r.legal_deadline <= ctx.as_of)
        t.add("nouveaux_entrants_delai_legal", len(group), dim, key)
        t.add("orientes_departement_6_semaines", in_time, dim, key)
        t.add("taux_orientes_departement_6_semaines", _rate(in_time, len(group)), dim, key)
        t.add("orientes_departement_apres_6_semaines", len(by_cd) - in_time, dim, key)
        t.add("orientes_france_travail", len(by_ft), dim, key)
        t.add("en_attente_dans_les_6_semaines", len(waiting) - past, dim, key)
        t.add("en_attente_au_dela_6_semaines", past, dim, key)
        t.add("sortis_avant_orientation", sum(1 for r in group if r.decided == "sorti_avant_orientation"), dim, key)
    t.add("nouveaux_entrants_hors_delai_legal", len(rows) - len(covered))
    t.notes.append(
        "Délai légal : six semaines (42 jours) à compter de la réception du fichier CAF/MSA portant l'ouverture ou "
        "le transfert du droit ; France Travail peut orienter à partir du 42e jour suivant la réception "
        "(réception le 01/03, France Travail peut orienter à partir du 12/04)."
    )
    return t


TABLES: dict[str, Callable[[Context], Table]] = {
    "nouveaux-entrants": nouveaux_entrants,
    "delais-orientation": delais_orientation,
    "absents-rdv": absents_rdv,
    "transmission": transmission,
    "stock-oarsa": stock_oarsa,
    "completude-volet3": completude,
    "statut-france-travail": statut_france_travail,
    "contrats-engagement": contrats_engagement,
    "delai-legal": delai_legal,
}


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
    "numerateur",
    "denominateur",
)


def _machine(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _percent(rate: Rate) -> str:
    return f"{rate * 100:.2f} %".replace(".", ",")


def _terms(value: Any) -> tuple[str, str]:
    """A rate's numerator and denominator (empty for any other figure)."""
    return (str(value.numerator), str(value.denominator)) if isinstance(value, Rate) else ("", "")


def to_csv(table: Table, locale: str = "fr", names: dict[str, str] | None = None) -> bytes:
    """One row per figure (long format): `;`, UTF-8 with BOM, CRLF; `fr` writes decimal commas, dates
    jj/mm/aaaa and rates as percentages ("47,59 %": French Excel), `c` points, ISO dates and rates as shares
    between 0 and 1 (pandas, R: `read.csv2` is not needed). A rate's numerator and denominator in their own
    columns (`numerateur`, `denominateur`), empty for the other figures."""

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
            _percent(f["valeur"]) if locale == "fr" and isinstance(f["valeur"], Rate) else fmt(f["valeur"]),
            *_terms(f["valeur"]),
        ]
        for f in data["figures"]
    )
    out = io.BytesIO()
    write_csv(CSV_COLUMNS, rows, out)
    return out.getvalue()


def filename(table: Table, extension: str = "csv") -> str:
    return f"pilotage_{table.name}_{table.period.label}_au_{table.as_of.isoformat()}.{extension}"
