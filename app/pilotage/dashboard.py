"""The Département's dashboard (`/tableau-de-bord`, issue #15): the month's figures in French, computed by the
pilotage tables (the same numbers as the API's), rendered on the server: charts as SVG drawn by pygal (no
script, nothing loaded from elsewhere), each followed by its table (RGAA: a text alternative to every chart,
reachable with the keyboard). Dates jj/mm/aaaa, decimal commas, commune names, official labels.
"""

from __future__ import annotations

import calendar
import math
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pygal
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape
from pygal.style import Style
from sqlalchemy import Connection, func, select

from app.flux.freshness import freshness
from app.models import EntryEpisode, FluxFile
from app.pilotage.labels import LABELS, NOT_GIVEN_LABEL, VALUE_LABELS, french_cell
from app.pilotage.period import Period, month_of
from app.pilotage.population import episodes, waiting_by_age
from app.pilotage.tables import Context, Table, compute, delai_legal, delais_orientation, statut_france_travail
from app.rules.deadlines import deadline_one_month
from app.rules.episodes import add_months

MONTHS = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
          "novembre", "décembre")  # fmt: skip
# the usual French abbreviations (Imprimerie nationale): never a name cut at four letters ("octo.")
SHORT_MONTHS = ("janv.", "févr.", "mars", "avr.", "mai", "juin", "juil.", "août", "sept.", "oct.", "nov.", "déc.")
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


def short_month_label(day: date) -> str:
    """A chart's month: its short French name and the year ("janv. 2026", "mai 2026")."""
    return f"{SHORT_MONTHS[day.month - 1]} {day.year}"


def nice_ticks(top: float, most: int = 6, whole: bool = True) -> list[float]:
    """An axis from 0 to at least `top` in at most `most` equal steps of 1, 2 or 5 × 10^n (0, 20, 40, 60 and
    not 0, 19, 38, 57); counts (`whole`) get whole steps, 1 at least. Nothing to show: 0 and 1."""
    if top <= 0:
        return [0, 1]
    rough = top / most
    power = 10 ** math.floor(math.log10(rough))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= rough - 1e-12)
    if whole:
        step = max(1, round(step))
    count = math.ceil(top / step - 1e-9)
    return [round(k * step, 10) for k in range(count + 1)]


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %".replace(".", ",")


def axis_percent(value: float) -> str:
    """A tick of a rates axis: 0 %, 20 %, 12,5 %."""
    return f"{round(value * 100, 6):g} %".replace(".", ",")


def figure(value: Any) -> str:
    """A figure in French; a fact missing is "Non précisé", as in the tables (issue #26)."""
    return french_cell(value) or NOT_GIVEN_LABEL


def in_days(value: Any) -> str:
    """A count of days in French: "1 jour", "1,5 jour", "12 jours"; "Non précisé" when missing."""
    if value is None:
        return NOT_GIVEN_LABEL
    return f"{figure(value)} {'jour' if abs(value) < 2 else 'jours'}"


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
    # issue #26: a CAF/MSA silent for more than PASSERELLE_PILOTAGE_GAP_DAYS working days, up to as_of (French)
    alerts: list[str] = field(default_factory=list)
    gap_days: int = 3


def _svg(chart: Any) -> Markup:
    svg = chart.render(is_unicode=True, disable_xml_declaration=True)
    svg = re.sub(r"<script.*?</script>", "", svg, flags=re.S)  # pygal's tooltip config: no script here
    return Markup(svg)  # noqa: S704 - pygal's own SVG, every label escaped by it


# Two drawings of each chart, one shown at a time (tableau-de-bord.css): the wide one for a desk screen, the
# narrow one drawn at a phone's width, so that neither's text is shrunk below its size (RGAA 10.4).
WIDE, NARROW = 800, 360


def _style(font: int, colors: tuple[str, ...] = STYLE.colors, stroke: int = 1) -> Style:
    return Style(background="white", plot_background="white", foreground="#161616", foreground_strong="#161616",
                 foreground_subtle="#3a3a3a", colors=colors, font_family=STYLE.font_family,
                 label_font_size=font, major_label_font_size=font, legend_font_size=font,
                 title_font_size=font + 2, value_font_size=font - 1,
                 stroke_width=stroke, no_data_font_size=font + 4, guide_stroke_color="#cecece",
                 major_guide_stroke_color="#cecece", guide_stroke_dasharray="0",
                 major_guide_stroke_dasharray="0")  # light plain guides: the objective alone is dashed  # fmt: skip


def _bar(title: str, labels: list[str], series: dict[str, Sequence[float | None]], percent_axis: bool = False,
         target: float | None = None) -> Markup:  # fmt: skip
    """Values along months or days: bars (counts) or lines (rates, with the objective as a dashed red line
    named in the legend). The axis at round values (`nice_ticks`); the labels whole, turned when they would
    touch."""
    wide = _pygal(title, labels, series, percent_axis, target, WIDE, 14)
    narrow = _pygal(title, labels, series, percent_axis, target, NARROW, 13)
    return Markup('<div class="large">{}</div><div class="etroit">{}</div>').format(wide, narrow)


def _pygal(title: str, labels: list[str], series: dict[str, Sequence[float | None]], percent_axis: bool,
           target: float | None, width: int, font: int) -> Markup:  # fmt: skip
    kind = pygal.Line if target is not None else pygal.Bar
    # the objective in the State's red, dashed and thick, drawn last: above the rates, below 100 % of the frame
    colors = ("#000091", "#18753c", "#c9191e") if target is not None else STYLE.colors
    values = [v for vs in series.values() for v in vs if v is not None]
    if percent_axis:
        ticks = nice_ticks(max([*values, target or 0, 1.0]), 5, whole=False)
    else:
        ticks = nice_ticks(max(values, default=0))
    every = _label_every(labels, width, font)
    rotation = _rotation(labels[::every], width, font)
    chart = kind(js=[], style=_style(font, colors, 3 if target is not None else 1), no_data_text="Aucune donnée",
                 width=width, height=360 if width == WIDE else 340,
                 show_legend=len(series) > 1 or target is not None, legend_at_bottom=True,
                 legend_at_bottom_columns=1 if width == NARROW else None, truncate_legend=-1,
                 print_values=False, truncate_label=-1, show_minor_x_labels=True, show_minor_y_labels=True,
                 range=(0, ticks[-1] * (1.08 if target is not None else 1)), include_x_axis=True,
                 value_formatter=axis_percent if percent_axis else lambda v: french_cell(v),
                 dots_size=4 if width == WIDE else 3, margin=12 if width == WIDE else 6,
                 x_label_rotation=rotation)  # fmt: skip
    chart.title = title
    chart.x_labels = labels
    chart.y_labels = ticks
    if every > 1:  # days 0 to 60: one label in `every`, a round one, the others as ticks
        chart.x_labels_major = labels[::every]
        chart.show_minor_x_labels = False
    if kind is pygal.Line and rotation == 0 and labels:  # a line's last label is centred on the edge
        chart.margin_right = round(max(len(label) for label in labels) * font * 0.35) + 4
    for name, vs in series.items():
        chart.add(name, vs)
    if target is not None:
        chart.add(f"Objectif : {percent(target)}", [target] * len(labels), show_dots=False,
                  stroke_style={"width": 4, "dasharray": "12, 6"})  # fmt: skip
    return _svg(chart)


def _rotation(labels: list[str], width: int, font: int) -> int:
    """0 when every label fits in its slot (about 0.6 em a character), else turned: 45° (90° if still too
    many for the width)."""
    if not labels:
        return 0
    slot = (width - 9 * font) / len(labels)
    longest = max(len(label) for label in labels) * font * 0.6
    if longest <= slot * 0.9:
        return 0
    return 45 if font * 1.6 <= slot else 90


def _label_every(labels: list[str], width: int, font: int) -> int:
    """1, or the step (1, 2 or 5 × 10^n) between the labels written when even turned they would touch."""
    if not labels:
        return 1
    slot = (width - 9 * font) / len(labels)
    need = font * 1.4
    if slot >= need:
        return 1
    return int(nice_ticks(need / slot, 1)[1])


def _bars(title: str, labels: list[str], values: Sequence[float | None]) -> Markup:
    """Counts by category, drawn here as horizontal bars, each under its label written whole on as many lines
    as it needs (the official labels are long: a chart axis would cut them), its value at the bar's end."""
    wide, narrow = _hbars(title, labels, values, WIDE, 15), _hbars(title, labels, values, NARROW, 14)
    return Markup('<div class="large">{}</div><div class="etroit">{}</div>').format(wide, narrow)


def _hbars(title: str, labels: list[str], values: Sequence[float | None], width: int, font: int) -> Markup:
    pad, line = 8, round(font * 1.3)
    chars = int((width - 2 * pad) / (font * 0.55))  # Arial's average width, generous
    top = max((v or 0 for v in values), default=0)
    ticks = nice_ticks(top, 5 if width == WIDE else 4)
    reserve = font * 0.6 * (len(figure(ticks[-1])) + 1) + pad  # the value written after the longest bar
    scale = (width - 2 * pad - reserve) / ticks[-1]
    parts: list[str] = []
    y = pad + font + 2
    parts.append(f'<text x="{pad}" y="{y}" font-size="{font + 2}" font-weight="bold">{escape(title)}</text>')
    y += line
    for label, value in zip(labels, values, strict=True):
        for text in textwrap.wrap(label, chars) or [""]:
            y += line
            parts.append(f'<text x="{pad}" y="{y}">{escape(text)}</text>')
        y += 6
        length = (value or 0) * scale
        parts.append(f'<rect x="{pad}" y="{y}" width="{length:.1f}" height="{font + 4}" fill="#000091"/>')
        parts.append(f'<text x="{pad + length + 6:.1f}" y="{y + font + 1}" font-weight="bold">'
                     f"{escape(figure(value))}</text>")  # fmt: skip
        parts.append(f'<line x1="{pad}" y1="{y - 2}" x2="{pad}" y2="{y + font + 6}" stroke="#3a3a3a"/>')
        y += font + 10
    height = y + pad
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
           f'height="{height}" font-family="{STYLE.font_family}" font-size="{font}" fill="#161616" '
           f'aria-hidden="true" focusable="false">{"".join(parts)}</svg>')  # fmt: skip
    return Markup(svg)  # noqa: S704 - our own SVG, every text in it escaped above


def months_with_data(conn: Connection, departements: list[str], months: list[Period]) -> list[Period]:
    """The months of a chart along time, from the first one with data: the month of the first CAF/MSA file
    applied or of the first entry episode's T0 of these départements, whichever comes first (a Département that
    started in October sees October to December, not twelve months of nothing before it). A month with data
    and no nouvel entrant after it stays (a zero is a figure). No data at all: the month shown only."""
    ff, ee = FluxFile.__table__.c, EntryEpisode.__table__.c
    firsts = [
        conn.execute(select(func.min(ff.received_on)).where(ff.departement_code.in_(departements),
                                                             ff.status == "applied")).scalar(),
        conn.execute(select(func.min(ee.t0)).where(ee.departement_code.in_(departements))).scalar(),
    ]  # fmt: skip
    known = [d for d in firsts if d is not None]
    if not known:
        return months[-1:]
    first = min(known)
    return [m for m in months if m.end >= first] or months[-1:]


def build(
    conn: Connection, departements: list[str], month: Period, as_of: date, target: float, gap_days: int = 3
) -> Dashboard:
    board = Dashboard(month, as_of, departements, gap_days=gap_days)
    silent = [f for f in freshness(conn, departements, as_of, gap_days) if f.silent]
    board.alerts = [f.message(with_departement=len(departements) > 1) for f in silent]

    def table(name: str, period: Period, dims: tuple[str, ...] = ()) -> Table:
        return compute(conn, name, departements, period, as_of, dims)

    # the twelve months up to the one shown: entrants and the two rates, against the objective
    twelve = [Period.parse(month_of(add_months(month.start, -k))) for k in range(11, -1, -1)]
    year_period = Period(twelve[0].start, month.end, "12 mois")
    months = months_with_data(conn, departements, twelve)  # the charts' months: not twelve when data has two
    year = episodes(conn, departements, year_period, as_of)  # one read for the months and the statuses
    monthly = [
        delais_orientation(Context(conn, departements, m, as_of, ()), [r for r in year if m.start <= r.t0 <= m.end])
        for m in months
    ]
    labels = [short_month_label(m.start) for m in months]
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
    open_month = month.end > as_of  # as_of the month's last day: complete, as the default month counts it
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
        note="Les mois affichés : depuis le premier mois où un fichier CAF/MSA a été reçu ou un nouvel entrant "
        "connu, douze au plus.",
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
        _bars("En attente, par ancienneté", bands, counts),
        ["Ancienneté de l'attente", "Personnes"], [[b, figure(n)] for b, n in zip(bands, counts, strict=True)],
    ))  # fmt: skip
    absents = table("absents-rdv", month)
    board.charts.append(Chart(
        "absents", f"Absents au rendez-vous d'orientation, nouveaux entrants de {month_label(month.start)}",
        _bars("Rendez-vous d'orientation", ["Orientés", "Avec rendez-vous", "Absents"],
              [absents.value("orientes"), absents.value("avec_rdv_orientation"),
               absents.value("absents_rdv_orientation")]),
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
        _bars("Statut France Travail", [VALUE_LABELS["statut_ft"][k] for k in keys], values),
        ["Statut France Travail", "Orientés"],
        [[VALUE_LABELS["statut_ft"][k], figure(v)] for k, v in zip(keys, values, strict=True)],
    ))  # fmt: skip
    categories = list(VALUE_LABELS["categorie_ft"])
    counts_by_category = [statuses.value("orientes_categorie_ft", "categorie_ft", k) for k in categories]
    board.charts.append(Chart(
        "categories", "Catégorie d'inscription France Travail des personnes orientées (douze derniers mois)",
        _bars("Catégorie France Travail", [VALUE_LABELS["categorie_ft"][k] for k in categories],
              counts_by_category),
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
        _bars("Délai légal de six semaines", [LABELS[k] for k in LEGAL_FIGURES], counts),
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
        _bars("Contrats d'engagement", [LABELS[k] for k in CONTRACT_FIGURES], counts),
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
    note = (f"{in_days(transmission.value('jours_de_reception'))} de réception, "
            f"{figure(transmission.value('receptions_par_semaine'))} par semaine ; dernier fichier reçu le "
            f"{figure(transmission.value('dernier_fichier_recu'))} ; écart maximal {in_days(gap)} "
            "(jours calendaires).")  # fmt: skip
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
