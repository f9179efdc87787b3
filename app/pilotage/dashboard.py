"""The Département's dashboard (`/tableau-de-bord`, issue #15): the month's figures in French, computed by the
pilotage tables (the same numbers as the API's), rendered on the server: charts as SVG drawn by pygal (no
script, nothing loaded from elsewhere), each followed by its table (RGAA: a text alternative to every chart,
reachable with the keyboard). Dates jj/mm/aaaa, decimal commas, commune names, official labels.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pygal
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from pygal.style import Style
from sqlalchemy import Connection, select

from app.models import FluxFile
from app.pilotage.labels import LABELS, NOT_GIVEN_LABEL, VALUE_LABELS, french_cell
from app.pilotage.period import Period, month_of
from app.pilotage.population import episodes, waiting_by_age
from app.pilotage.tables import Context, Table, compute, delai_legal, delais_orientation, statut_france_travail
from app.rules.deadlines import deadline_one_month
from app.rules.episodes import add_months

MONTHS = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
          "novembre", "décembre")  # fmt: skip
# Bleu France and a red of the State's palette, on white: contrast ratios 15.2:1 and 5.9:1 (RGAA 3.2, 3.3)
STYLE = Style(
    background="white",
    plot_background="white",
    foreground="#161616",
    foreground_strong="#161616",
    foreground_subtle="#3a3a3a",
    colors=("#000091", "#c9191e", "#18753c", "#716043"),
    font_family="Marianne, Arial, sans-serif",
    label_font_size=14,
    major_label_font_size=14,
    legend_font_size=14,
    title_font_size=16,
    value_font_size=13,
)
TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parent.parent / "templates"),
    autoescape=select_autoescape(["html"]),
)


def month_label(day: date) -> str:
    return f"{MONTHS[day.month - 1]} {day.year}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %".replace(".", ",")


def figure(value: Any) -> str:
    """A figure in French; a fact missing is "Non précisé", as in the tables (issue #26)."""
    return french_cell(value) or NOT_GIVEN_LABEL


def in_days(value: Any) -> str:
    return NOT_GIVEN_LABEL if value is None else f"{figure(value)} jours"


@dataclass
class Chart:
    """A chart and its table alternative (the same numbers)."""

    key: str
    title: str
    svg: Markup
    columns: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Dashboard:
    month: Period
    as_of: date
    departements: list[str]
    headline: list[tuple[str, str]] = field(default_factory=list)
    provisional: dict[str, str] = field(default_factory=dict)  # a tile's label -> why its figure may still move
    charts: list[Chart] = field(default_factory=list)


def _svg(chart: Any) -> Markup:
    svg = chart.render(is_unicode=True, disable_xml_declaration=True)
    svg = re.sub(r"<script.*?</script>", "", svg, flags=re.S)  # pygal's tooltip config: no script here
    return Markup(svg)  # noqa: S704 - pygal's own SVG, every label escaped by it


def _bar(title: str, labels: list[str], series: dict[str, Sequence[float | None]], percent_axis: bool = False,
         target: float | None = None) -> Markup:  # fmt: skip
    kind = pygal.Line if target is not None else pygal.Bar
    chart = kind(js=[], style=STYLE, width=800, height=360, show_legend=len(series) > 1 or target is not None,
                 legend_at_bottom=True, print_values=False, truncate_label=-1, x_label_rotation=0,
                 show_minor_x_labels=True, range=(0, 1) if percent_axis else None,
                 value_formatter=percent if percent_axis else lambda v: french_cell(v))  # fmt: skip
    chart.title = title
    chart.x_labels = labels
    if any(len(label) > 12 for label in labels):
        chart.x_label_rotation = 20
    if not percent_axis:  # counts: whole numbers on the axis
        top = max((v or 0 for values in series.values() for v in values), default=0)
        step = max(1, -(-int(top) // 8))
        chart.y_labels = list(range(0, int(top) + step + 1, step))
    for name, values in series.items():
        chart.add(name, values)
    if target is not None:
        chart.add(f"Objectif ({percent(target)})", [target] * len(labels), stroke_style={"dasharray": "6, 4"},
                  show_dots=False)  # fmt: skip
    return _svg(chart)


def build(conn: Connection, departements: list[str], month: Period, as_of: date, target: float) -> Dashboard:
    board = Dashboard(month, as_of, departements)

    def table(name: str, period: Period, dims: tuple[str, ...] = ()) -> Table:
        return compute(conn, name, departements, period, as_of, dims)

    # the twelve months up to the one shown: entrants and the two rates, against the objective
    months = [Period.parse(month_of(add_months(month.start, -k))) for k in range(11, -1, -1)]
    year_period = Period(months[0].start, month.end, "12 mois")
    year = episodes(conn, departements, year_period, as_of)  # one read for the months and the statuses
    monthly = [
        delais_orientation(Context(conn, departements, m, as_of, ()), [r for r in year if m.start <= r.t0 <= m.end])
        for m in months
    ]
    labels = [f"{MONTHS[m.start.month - 1][:4]}. {m.start.year % 100:02d}" for m in months]
    entrants = [t.value("nouveaux_entrants") for t in monthly]
    rate15 = [t.value("taux_15j") for t in monthly]
    rate1m = [t.value("taux_1mois") for t in monthly]
    current = monthly[-1]
    board.headline = [
        ("Nouveaux entrants", figure(current.value("nouveaux_entrants"))),
        ("Orientés en 15 jours ou moins", percent(current.value("taux_15j"))),
        ("Orientés en un mois ou moins", percent(current.value("taux_1mois"))),
        ("Délai moyen d'orientation", in_days(current.value("delai_moyen_jours"))),
        ("Délai médian d'orientation", in_days(current.value("delai_median_jours"))),
        ("En attente d'orientation", figure(current.value("en_attente"))),
        # issue #25: orientations France Travail decided (counted among the oriented too)
        ("Orientés par France Travail", figure(current.value("orientes_par_france_travail"))),
    ]
    open_month = month.end >= as_of
    inside = [r for r in year if month.start <= r.t0 <= month.end and r.decided is None
              and deadline_one_month(r.t0) >= as_of]  # fmt: skip
    if open_month or inside:  # issue #26: said on the tiles, not only under a table further down
        why = (f"mois en cours au {as_of.strftime('%d/%m/%Y')}" if open_month else
               f"{len(inside)} personne(s) encore dans leur délai au {as_of.strftime('%d/%m/%Y')}")  # fmt: skip
        board.provisional.update({label: why for label, _v in board.headline})
    board.charts.append(Chart(
        "entrants", "Nouveaux entrants par mois (date T0)",
        _bar("Nouveaux entrants par mois", labels, {"Nouveaux entrants": entrants}),
        ["Mois", "Nouveaux entrants"],
        [[month_label(m.start), figure(n)] for m, n in zip(months, entrants, strict=True)],
    ))  # fmt: skip
    board.charts.append(Chart(
        "taux", "Taux d'orientation en 15 jours et en un mois, par mois de T0",
        _bar("Taux d'orientation", labels, {"En 15 jours": rate15, "En un mois": rate1m}, percent_axis=True,
             target=target),
        ["Mois", "Nouveaux entrants", "Taux en 15 jours", "Taux en un mois", "Objectif"],
        [[month_label(m.start), figure(n), percent(a), percent(b), percent(target)]
         for m, n, a, b in zip(months, entrants, rate15, rate1m, strict=True)],
        note="Un nouvel entrant du mois encore en attente compte comme non orienté : les derniers mois montent "
        "à mesure que les décisions arrivent.",
    ))  # fmt: skip
    legal = delai_legal(Context(conn, departements, month, as_of, ()), [r for r in year if month.start <= r.t0])
    board.headline += [  # beside the convention's: the six weeks of CASF art. D.262-65-2
        ("Orientés par le Département dans les six semaines (délai légal)", percent(legal.value(RATE_6_WEEKS))),
        ("Orientés par France Travail", figure(legal.value("orientes_france_travail"))),
        ("En attente au-delà des six semaines", figure(legal.value("en_attente_au_dela_6_semaines"))),
    ]
    if open_month or legal.value("en_attente_dans_les_6_semaines"):
        board.provisional[board.headline[-3][0]] = "des personnes encore dans les six semaines"
    board.charts.append(_legal_chart(legal, month))
    contracts = table("contrats-engagement", month)
    board.headline += [  # the contrat d'engagement (Code du travail art. D.5411-14-1): one month from the orientation
        ("Contrats d'engagement signés dans le mois (orientés du mois)", percent(contracts.value(RATE_CE))),
        ("Orientés sans contrat, délai d'un mois dépassé", figure(contracts.value("en_attente_contrat_hors_delai"))),
        ("Accompagnés avant 2025 sans contrat d'engagement", figure(contracts.value("transition_sans_ce"))),
    ]
    contract_clock = (contracts.value("en_attente_contrat") or 0) - (
        contracts.value("en_attente_contrat_hors_delai") or 0
    )
    if open_month or contract_clock > 0:
        board.provisional[board.headline[-3][0]] = "des personnes orientées encore dans leur mois"
    board.charts.append(_contracts_chart(contracts, month, as_of))
    histogram = [(int(k), v) for i, _d, k, v in current.figures if i == "orientes_par_delai"]
    board.charts.append(Chart(
        "delais", f"Délais d'orientation des nouveaux entrants de {month_label(month.start)} (jours)",
        _bar("Orientés par délai (jours)", [str(d) for d, _n in histogram], {"Orientés": [n for _d, n in histogram]}),
        ["Délai (jours)", "Orientés"], [[str(d), figure(n)] for d, n in histogram if n],
    ))  # fmt: skip
    waiting = waiting_by_age(conn, departements, as_of)
    bands, counts = list(waiting), list(waiting.values())
    board.charts.append(Chart(
        "attente", f"Personnes en attente d'orientation au {as_of.strftime('%d/%m/%Y')}, par ancienneté",
        _bar("En attente, par ancienneté", bands, {"En attente": counts}),
        ["Ancienneté de l'attente", "Personnes"], [[b, figure(n)] for b, n in zip(bands, counts, strict=True)],
    ))  # fmt: skip
    absents = table("absents-rdv", month)
    board.charts.append(Chart(
        "absents", f"Absents au rendez-vous d'orientation, nouveaux entrants de {month_label(month.start)}",
        _bar("Rendez-vous d'orientation", ["Orientés", "Avec rendez-vous", "Absents"],
             {"Personnes": [absents.value("orientes"), absents.value("avec_rdv_orientation"),
                            absents.value("absents_rdv_orientation")]}),
        ["Indicateur", "Valeur"],
        [[LABELS[k], figure(absents.value(k))] for k in ("orientes", "avec_rdv_orientation", "absents_rdv_orientation")]
        + [[LABELS["taux_absence_rdv"], percent(absents.value("taux_absence_rdv"))]],
    ))  # fmt: skip
    board.charts.append(_calendar(conn, departements, table("transmission", month), month, as_of))
    statuses = statut_france_travail(Context(conn, departements, year_period, as_of, ()), year)
    keys = list(VALUE_LABELS["statut_ft"])
    values = [statuses.value("orientes_statut_ft", "statut_ft", k) for k in keys]
    board.charts.append(Chart(
        "statuts", "Statut France Travail des personnes orientées (nouveaux entrants des douze derniers mois)",
        _bar("Statut France Travail", [VALUE_LABELS["statut_ft"][k] for k in keys], {"Orientés": values}),
        ["Statut France Travail", "Orientés"],
        [[VALUE_LABELS["statut_ft"][k], figure(v)] for k, v in zip(keys, values, strict=True)],
    ))  # fmt: skip
    categories = list(VALUE_LABELS["categorie_ft"])
    counts_by_category = [statuses.value("orientes_categorie_ft", "categorie_ft", k) for k in categories]
    board.charts.append(Chart(
        "categories", "Catégorie d'inscription France Travail des personnes orientées (douze derniers mois)",
        _bar("Catégorie France Travail", [VALUE_LABELS["categorie_ft"][k] for k in categories],
             {"Orientés": counts_by_category}),
        ["Catégorie d'inscription France Travail", "Orientés"],
        [[VALUE_LABELS["categorie_ft"][k], figure(v)] for k, v in zip(categories, counts_by_category, strict=True)],
    ))  # fmt: skip
    return board


LEGAL_FIGURES = ("nouveaux_entrants_delai_legal", "orientes_departement_6_semaines",
                 "orientes_departement_apres_6_semaines", "orientes_france_travail", "en_attente_dans_les_6_semaines",
                 "en_attente_au_dela_6_semaines")  # fmt: skip
RATE_6_WEEKS = "taux_orientes_departement_6_semaines"


def _legal_chart(legal: Table, month: Period) -> Chart:
    """Beside the convention's figures, the legal deadline of CASF art. D.262-65-2 (six weeks) for the month's
    nouveaux entrants it covers (the `delai-legal` table, as of as_of)."""
    counts = [legal.value(k) for k in LEGAL_FIGURES]
    return Chart(
        "delai-legal", f"Délai légal de six semaines, nouveaux entrants de {month_label(month.start)}",
        _bar("Délai légal de six semaines", [LABELS[k] for k in LEGAL_FIGURES], {"Personnes": counts}),
        ["Indicateur", "Valeur"],
        [[LABELS[k], figure(v)] for k, v in zip(LEGAL_FIGURES, counts, strict=True)]
        + [[LABELS[RATE_6_WEEKS], percent(legal.value(RATE_6_WEEKS))]],
        note="Art. D.262-65-2 du CASF : sans orientation par le Département dans les six semaines suivant la "
        "réception de l'information sur l'ouverture ou le transfert du droit, France Travail oriente. Nouveaux "
        f"entrants hors délai légal (ni ouverture ni transfert du droit) : "
        f"{figure(legal.value('nouveaux_entrants_hors_delai_legal'))}.",
    )  # fmt: skip


CONTRACT_FIGURES = ("orientes_periode", "contrats_signes_1mois", "contrats_signes", "en_attente_contrat",
                    "en_attente_contrat_hors_delai")  # fmt: skip
RATE_CE = "taux_contrat_1mois"


def _contracts_chart(contracts: Table, month: Period, as_of: date) -> Chart:
    """The contrats d'engagement of the persons oriented in the month (the `contrats-engagement` table, as of
    as_of), and the transition: those accompanied before 2025 still without one."""
    counts = [contracts.value(k) for k in CONTRACT_FIGURES]
    return Chart(
        "contrats", f"Contrats d'engagement des personnes orientées en {month_label(month.start)}",
        _bar("Contrats d'engagement", [LABELS[k] for k in CONTRACT_FIGURES], {"Personnes": counts}),
        ["Indicateur", "Valeur"],
        [[LABELS[k], figure(v)] for k, v in zip(CONTRACT_FIGURES, counts, strict=True)]
        + [[LABELS[RATE_CE], percent(contracts.value(RATE_CE))],
           [LABELS["delai_moyen_contrat_jours"], figure(contracts.value("delai_moyen_contrat_jours"))],
           [LABELS["delai_median_contrat_jours"], figure(contracts.value("delai_median_contrat_jours"))],
           [LABELS["transition_sans_ce"], figure(contracts.value("transition_sans_ce"))]],
        note="Art. D.5411-14-1 du code du travail : le contrat d'engagement est signé dans le mois qui suit la "
        "notification de l'orientation (une réorientation ouvre un nouveau mois). Les personnes accompagnées avant "
        "le 1er janvier 2025 doivent en avoir un au plus tard à l'échéance de transition (1er janvier 2027 ; "
        f"situation au {as_of.strftime('%d/%m/%Y')}).",
    )  # fmt: skip


def _calendar(conn: Connection, departements: list[str], transmission: Table, month: Period, as_of: date) -> Chart:
    """The month as a calendar: the days a CAF/MSA beneficiary file was received (the table is the chart)."""
    ff = FluxFile.__table__.c
    days_with_files = set(conn.execute(
        select(ff.received_on).where(ff.departement_code.in_(departements), ff.status == "applied",
                                     ff.nature == "D", ff.received_on >= month.start,
                                     ff.received_on <= min(month.end, as_of))).scalars())  # fmt: skip
    weeks = calendar.Calendar(firstweekday=0).monthdatescalendar(month.start.year, month.start.month)
    rows = []
    for week in weeks:
        row = []
        for day in week:
            if day.month != month.start.month:
                row.append("")
            elif day in days_with_files:
                row.append(f"{day.day} ✓ reçu")
            elif day > as_of:
                row.append(f"{day.day}")
            else:
                row.append(f"{day.day} —")
        rows.append(row)
    gap = transmission.value("ecart_max_jours")
    note = (f"{figure(transmission.value('jours_de_reception'))} jours de réception, "
            f"{figure(transmission.value('receptions_par_semaine'))} par semaine ; dernier fichier reçu le "
            f"{figure(transmission.value('dernier_fichier_recu'))} ; écart maximal {figure(gap)} jours.")  # fmt: skip
    return Chart("calendrier", f"Fichiers CAF/MSA reçus en {month_label(month.start)}", Markup(""),
                 ["lun.", "mar.", "mer.", "jeu.", "ven.", "sam.", "dim."], rows, note)  # fmt: skip


def render(board: Dashboard, departement_choices: list[str], chosen: str | None, target: float) -> str:
    previous = month_of(add_months(board.month.start, -1))
    following = add_months(board.month.start, 1)
    return TEMPLATES.get_template("tableau_de_bord.html").render(
        board=board,
        month_label=month_label(board.month.start),
        as_of_label=board.as_of.strftime("%d/%m/%Y"),
        month_value=month_of(board.month.start),
        as_of_value=board.as_of.isoformat(),
        previous=previous,
        following=month_of(following) if following <= board.as_of else None,
        departements=departement_choices,
        chosen=chosen,
        target=percent(target),
    )


def last_complete_month(day: date) -> str:
    """The month the dashboard opens on (issue #26): the last one complete on `day` (`day` its last day
    included), never the month still running."""
    return month_of(add_months((day + timedelta(days=1)).replace(day=1), -1))


def last_day(day: date) -> date:
    return add_months(day.replace(day=1), 1) - timedelta(days=1)
