"""The indicator as tables for a terminal (CLI and demo), in French with the official labels (never code
names): percentages and decimals with a comma, dates jj/mm/aaaa."""

from __future__ import annotations

from datetime import date
from typing import Any

from rich.console import Console
from rich.table import Table

from app.pilotage.indicator import FLAT_KEYS
from app.pilotage.labels import LABELS, french_cell, value_label

EXTRA_LABELS = {"orientes_accompagnement_global": "Orientés en accompagnement global"}


def _shown(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key.startswith("taux"):
        return f"{value * 100:.1f} %".replace(".", ",")
    return french_cell(value)


def _day(iso: str) -> str:
    return date.fromisoformat(iso).strftime("%d/%m/%Y")


def print_indicator(result: dict[str, Any], console: Console) -> None:
    table = Table(
        title=f"Nouveaux entrants, T0 du {_day(result['from'])} au {_day(result['to'])} "
        f"(faits connus au {_day(result['as_of'])})"
    )
    table.add_column("Indicateur")
    table.add_column("Valeur", justify="right")
    for key in FLAT_KEYS:
        table.add_row(LABELS.get(key) or EXTRA_LABELS.get(key, key), _shown(key, result[key]))
    console.print(table)
    by_org = Table(title="Par organisme référent")
    for col in ("Organisme référent", "Orientés", "Orientés en 15 jours ou moins", "Délai moyen (jours)"):
        by_org.add_column(col, justify="left" if col.startswith("Organisme") else "right")
    for row in result["par_organisme"]:
        by_org.add_row(
            value_label("organisme", row["organisme"]),
            _shown("orientes", row["orientes"]),
            _shown("orientes_15j", row["orientes_15j"]),
            _shown("delai_moyen_jours", row["delai_moyen_jours"]),
        )
    console.print(by_org)
    t = result["transmission"]
    console.print(
        f"Transmission CAF/MSA : {_shown('x', t['receptions_par_semaine'])} réceptions par semaine, écart médian "
        f"{_shown('x', t['ecart_median_jours'])} jour(s), maximal {_shown('x', t['ecart_max_jours'])} jour(s)"
    )
