"""The indicator as tables for a terminal (CLI and demo)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from app.pilotage.orientation import FLAT_KEYS


def print_indicator(result: dict[str, Any], console: Console) -> None:
    table = Table(title=f"Nouveaux entrants, T0 du {result['from']} au {result['to']} (faits au {result['as_of']})")
    table.add_column("indicateur")
    table.add_column("valeur", justify="right")
    for key in FLAT_KEYS:
        value = result[key]
        if key.startswith("taux") and value is not None:
            value = f"{value * 100:.1f} %"
        table.add_row(key, "-" if value is None else str(value))
    console.print(table)
    by_org = Table(title="Par organisme référent")
    for col in ("organisme", "orientes", "orientes_15j", "delai_moyen_jours"):
        by_org.add_column(col)
    for row in result["par_organisme"]:
        by_org.add_row(*[str(row[c]) for c in ("organisme", "orientes", "orientes_15j", "delai_moyen_jours")])
    console.print(by_org)
    t = result["transmission"]
    console.print(
        f"Transmission CAF/MSA: {t['receptions_par_semaine']} réceptions par semaine, "
        f"écart médian {t['ecart_median_jours']} j, maximal {t['ecart_max_jours']} j"
    )
