"""Issue #26 item 4: charts people read. Short French month names with the year, only the months that have
data, ticks at round values, the objective visible and named; each chart at 1280 and 390 px in Debian's
Chromium, with no label touching another and nothing cut; its screenshots kept in `test-artifacts/`
(gitignored: made by each run, looked at by the person who changes a chart)."""

from __future__ import annotations

import itertools
import re
from datetime import date
from pathlib import Path

import pytest

from app.pilotage.dashboard import _bar, _bars, _label_every, _rotation, months_with_data, nice_ticks, short_month_label
from app.pilotage.period import Period
from tests.pilotage.test_dashboard_browser import ARTIFACTS, CHROMIUM
from tests.support.live_server import LiveServer

CSS = Path(__file__).resolve().parents[2] / "app" / "static" / "tableau-de-bord.css"


@pytest.mark.parametrize(
    ("top", "ticks"),
    [
        (0, [0, 1]),
        (1, [0, 1]),
        (4, [0, 1, 2, 3, 4]),
        (7, [0, 2, 4, 6, 8]),
        (19, [0, 5, 10, 15, 20]),  # not 0, 19, 38, 57 (the issue's)
        (57, [0, 10, 20, 30, 40, 50, 60]),
        (101, [0, 20, 40, 60, 80, 100, 120]),
        (1234, [0, 500, 1000, 1500]),
    ],
)
def test_count_ticks_are_round_whole_and_cover_the_top(top, ticks):
    assert nice_ticks(top) == ticks


def test_rate_ticks_go_by_a_fifth_and_every_step_is_1_2_or_5_times_a_power_of_ten():
    assert nice_ticks(1.0, 5, whole=False) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(0.3, 5, whole=False) == [0, 0.1, 0.2, 0.3]
    for top in (3, 9, 11, 26, 99, 250, 777, 10_001):
        ticks = nice_ticks(top)
        step = ticks[1] - ticks[0]
        mantissa = step / 10 ** (len(str(int(step))) - 1)
        assert mantissa in (1, 2, 5), (top, ticks)
        assert ticks[-1] >= top > ticks[-2] and len(ticks) <= 7
        assert all(b - a == step for a, b in itertools.pairwise(ticks))


def test_months_are_written_short_the_french_way_with_the_year():
    labels = [short_month_label(date(2026, m, 1)) for m in range(1, 13)]
    assert labels == ["janv. 2026", "févr. 2026", "mars 2026", "avr. 2026", "mai 2026", "juin 2026", "juil. 2026",
                      "août 2026", "sept. 2026", "oct. 2026", "nov. 2026", "déc. 2026"]  # fmt: skip


def test_labels_turn_only_when_they_would_touch():
    twelve = [short_month_label(date(2026, m, 1)) for m in range(1, 13)]
    assert _rotation(twelve[:2], 800, 14) == 0 and _rotation(twelve[:2], 360, 13) == 0
    assert _rotation(twelve, 800, 14) == 45 and _rotation(twelve, 360, 13) == 90


def test_days_are_labelled_every_so_many_when_they_would_touch():
    days = [str(d) for d in range(61)]
    assert _label_every(days[:20], 800, 14) == 1
    assert _label_every(days, 800, 14) == 2 and _label_every(days, 360, 13) == 5
    svg = str(_bar("Orientés par délai (jours)", days, {"Orientés": [d % 4 for d in range(61)]}))
    narrow = svg[svg.index('class="etroit"') :]
    axis = narrow[narrow.index('class="axis x"') :]
    written = re.findall(r'class="major"[^>]*>(\d+)</text>', axis[: axis.index("</g></g>")])
    assert written == [str(d) for d in range(0, 61, 5)]


def test_the_objective_is_drawn_dashed_and_named_above_the_rates():
    svg = str(_bar("Taux", ["nov. 2026", "déc. 2026"], {"En 15 jours": [0.5, 0.25], "En un mois": [1.0, None]},
                   percent_axis=True, target=1.0))  # fmt: skip
    assert svg.count("Objectif : 100,0 %") == 2  # named in the legend of both drawings
    assert svg.count("dasharray:12,6") == 2  # its own style, in each drawing
    assert "nov. 2026" in svg and "déc. 2026" in svg and "octo." not in svg
    for tick in ("0 %", "20 %", "100 %"):
        assert f">{tick}<" in svg
    assert ">120 %<" not in svg  # the frame goes a little above 100 %, the axis does not


def test_category_labels_are_written_whole():
    long = "Catégorie G (attente) : demandeurs et bénéficiaires du RSA en attente d'orientation"
    svg = str(_bars("Catégorie France Travail", [long, "Autres"], [3, 0]))
    narrow = svg[svg.index('class="etroit"') :]
    lines = re.findall(r"<text x=\"8\" y=\"\d+\">([^<]*)</text>", narrow)
    assert " ".join(lines[: lines.index("Autres")]) == long.replace("'", "&#39;")  # wrapped, not cut


def test_the_charts_show_the_months_from_the_first_with_data(db, scene):
    from app.db import get_engine

    d = scene["d"]  # the scene's file and its nouveaux entrants: d
    twelve = [Period.parse(f"{y:04d}-{m:02d}") for y, m in _months_back(d, 14)][-12:]
    with get_engine(db).connect() as conn:
        shown = months_with_data(conn, ["055"], twelve)
        assert shown[0].start == d.replace(day=1) and shown[-1] == twelve[-1]
        assert len(shown) == 3  # d's month and the two after it
        assert months_with_data(conn, ["054"], twelve) == twelve[-1:]  # nothing there: the month shown only


def _months_back(d: date, after: int) -> list[tuple[int, int]]:
    """From 11 months before d's month to `after - 12` months after it... as (year, month)."""
    start = d.year * 12 + d.month - 1 - (after - 3)
    return [((start + k) // 12, (start + k) % 12 + 1) for k in range(after)]


def test_each_chart_at_1280_and_390_pixels(app, make_api_key, scene):
    """Screenshots of each chart at both widths into test-artifacts/, and what an eye would check, checked:
    the page does not scroll sideways, the drawing for the width is the one shown, no two axis labels touch,
    no text leaves its drawing."""
    from playwright.sync_api import sync_playwright

    key = make_api_key(["pilotage:read"])
    as_of = scene["as_of"]
    month = as_of.strftime("%Y-%m")  # d's month and the next: two months of data
    ARTIFACTS.mkdir(exist_ok=True)
    with LiveServer(app) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            for width, height in ((1280, 900), (390, 844)):
                context = browser.new_context(extra_http_headers={"X-API-Key": key}, locale="fr-FR",
                                              viewport={"width": width, "height": height})  # fmt: skip
                page = context.new_page()
                answer = page.goto(f"{base}/tableau-de-bord?mois={month}&as_of={as_of.isoformat()}")
                assert answer is not None and answer.status == 200
                _look(page, width, "tableau-de-bord")
                context.close()
            # twelve months of labels, the longest ones, on the page's own style sheet
            twelve = [short_month_label(date(2026, m, 1)) for m in range(1, 13)]
            svg = _bar("Taux d'orientation", twelve, {"En 15 jours": [0.1 * (m % 9) for m in range(12)],
                       "En un mois": [0.1 * (m % 11) for m in range(12)]}, percent_axis=True, target=1.0)  # fmt: skip
            counts = _bar("Nouveaux entrants par mois", twelve, {"Nouveaux entrants": [19 * m for m in range(12)]})
            days = _bar("Orientés par délai (jours)", [str(d) for d in range(61)],
                        {"Orientés": [(d * 7) % 5 for d in range(61)]})  # fmt: skip
            html = (f'<!DOCTYPE html><html lang="fr"><head><meta name="viewport" content="width=device-width, '
                    f'initial-scale=1"><style>{CSS.read_text()}</style></head><body><main>'
                    f'<section id="douze-taux"><div class="graphique">{svg}</div></section>'
                    f'<section id="douze-entrants"><div class="graphique">{counts}</div></section>'
                    f'<section id="soixante-jours"><div class="graphique">{days}</div></section>'
                    f"</main></body></html>")  # fmt: skip
            for width, height in ((1280, 900), (390, 844)):
                page = browser.new_page(viewport={"width": width, "height": height})
                page.set_content(html)
                _look(page, width, "douze-mois")
                page.close()
        finally:
            browser.close()


def _look(page, width: int, name: str) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= width, "the page scrolls sideways"
    sections = page.locator("section:has(.graphique)")
    assert sections.count() >= 2
    for n in range(sections.count()):
        section = sections.nth(n)
        key = section.get_attribute("id")
        shown = section.locator(".large" if width > 640 else ".etroit")
        hidden = section.locator(".etroit" if width > 640 else ".large")
        assert shown.is_visible() and not hidden.is_visible(), key
        svg = shown.locator("svg").first
        box = svg.bounding_box()
        assert box is not None and box["width"] <= width
        problems = svg.evaluate(
            """svg => {
                const out = [];
                const frame = svg.getBoundingClientRect();
                const texts = [...svg.querySelectorAll('text')].filter(t => t.textContent.trim()
                    && getComputedStyle(t).display !== 'none' && getComputedStyle(t).visibility !== 'hidden'
                    && !t.closest('.tooltip'));
                for (const t of texts) {
                    const r = t.getBoundingClientRect();
                    if (r.left < frame.left - 1 || r.right > frame.right + 1 || r.top < frame.top - 1
                        || r.bottom > frame.bottom + 1) out.push('cut: ' + t.textContent);
                }
                const labels = [...svg.querySelectorAll('.axis.x text')].filter(t => t.textContent.trim());
                for (let i = 0; i < labels.length; i++) for (let j = i + 1; j < labels.length; j++) {
                    const a = labels[i].getBoundingClientRect(), b = labels[j].getBoundingClientRect();
                    // turned labels: their boxes overlap, so compare where they start along the axis
                    const turned = labels[i].getAttribute('transform');
                    const touch = turned
                        ? Math.abs(a.right - b.right) < parseFloat(getComputedStyle(labels[i]).fontSize) * 0.9
                        : a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
                    if (touch) out.push('touch: ' + labels[i].textContent + ' / ' + labels[j].textContent);
                }
                const size = Math.min(...texts.map(t => parseFloat(getComputedStyle(t).fontSize)
                    * Math.hypot(t.getScreenCTM().a, t.getScreenCTM().b)));
                if (size < 11) out.push('text too small: ' + size.toFixed(1) + ' px');
                return out;
            }"""
        )
        shown.screenshot(path=str(ARTIFACTS / f"graphique-{name}-{key}-{width}.png"))  # first: to be looked at
        assert (ARTIFACTS / f"graphique-{name}-{key}-{width}.png").stat().st_size > 2_000
        assert not problems, (key, width, problems)


def test_days_are_written_in_french_singular_and_plural():
    from app.pilotage.dashboard import in_days

    assert (in_days(0), in_days(1), in_days(1.5), in_days(2), in_days(12)) == (
        "0 jour", "1 jour", "1,5 jour", "2 jours", "12 jours")  # fmt: skip
    assert in_days(None) == "Non précisé"
