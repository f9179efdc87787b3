"""Indicators 1 and 2 of annex 4 emploi: nouveaux entrants and their orientation within 15 days / one month.

A view over the pilotage tables: the figures are those of the table `delais-orientation` (and of the table
`transmission` for the CAF/MSA's transmissions), computed from the same persons (`app.pilotage.population`:
an episode counts if its T0 is in [from, to] and on or before as_of; its outcome counts if decided on or
before as_of), with the same codes and labels for every breakdown. So the same period and as-of give the
same figures whenever they are asked, and a late fact dated earlier is simply taken into account.
"""

from __future__ import annotations

import statistics
from datetime import date
from typing import Any

from sqlalchemy import Connection

from app.pilotage.labels import ENSEMBLE, NOT_ORIENTED, value_label
from app.pilotage.period import Period
from app.pilotage.population import Row
from app.pilotage.tables import Context, Table, delais_orientation
from app.pilotage.tables import transmission as transmission_table

DELAY_BUCKETS = ((0, 7, "0-7"), (8, 14, "8-14"), (15, 30, "15-30"), (31, 10**6, "31+"))
BREAKDOWNS = ("organisme", "type_parcours", "caf_msa", "accompagnement_global")
TABLE_KEYS = (  # the figures read as they are from the table delais-orientation, for the whole
    "nouveaux_entrants",
    "orientes",
    "orientes_15j",
    "orientes_1mois",
    "taux_15j",
    "taux_1mois",
    "delai_moyen_jours",
    "delai_median_jours",
    "en_attente",
    "sortis_avant_orientation",
)
# The figures printed flat (display.print_indicator): the table's but the count of orientés, then two of its own.
FLAT_KEYS = (
    *(key for key in TABLE_KEYS if key != "orientes"),
    "absents_rdv_orientation",
    "orientes_accompagnement_global",
)


def keys_of(table: Table, dimension: str) -> list[str]:
    """The breakdown values of a dimension in a table, in its order."""
    return list(dict.fromkeys(k for _i, d, k, _v in table.figures if d == dimension))


def oriented_by(table: Table, dimension: str) -> list[dict[str, Any]]:
    """Per breakdown value of the oriented (not the `NOT_ORIENTED` value): orientés, in 15 days, mean delay;
    each with its label."""
    return [
        {
            dimension: key,
            "libelle": value_label(dimension, key),
            "orientes": table.value("orientes", dimension, key),
            "orientes_15j": table.value("orientes_15j", dimension, key),
            "delai_moyen_jours": table.value("delai_moyen_jours", dimension, key),
        }
        for key in keys_of(table, dimension)
        if key != NOT_ORIENTED and table.value("orientes", dimension, key)
    ]


def _waiting(rows: list[Row], as_of: date) -> dict[str, Any]:
    ages = [(as_of - r.t0).days for r in rows if r.decided is None]
    return {"max": max(ages) if ages else None, "median": statistics.median(ages) if ages else None}


def orientation_indicator(
    conn: Connection, departements: list[str], start: date, end: date, as_of: date
) -> dict[str, Any]:
    ctx = Context(conn, departements, Period.days(start, end), as_of, BREAKDOWNS)
    rows = ctx.rows()
    table = delais_orientation(ctx, rows)
    oriented = [r for r in rows if r.decided == "oriente"]
    delays = [r.delay_days for r in oriented if r.delay_days is not None]
    return {
        "departements": departements,
        "from": start.isoformat(),
        "to": end.isoformat(),
        "as_of": as_of.isoformat(),
        **{key: table.value(key) for key in TABLE_KEYS},
        "distribution_delais": {label: sum(1 for x in delays if lo <= x <= hi) for lo, hi, label in DELAY_BUCKETS},
        "en_attente_age_jours": _waiting(rows, as_of),
        "absents_rdv_orientation": sum(r.rdv_absent for r in oriented),
        "orientes_accompagnement_global": table.value("orientes", "accompagnement_global", "oui")
        if "oui" in keys_of(table, "accompagnement_global")
        else 0,
        "par_organisme": oriented_by(table, "organisme"),
        "par_type_parcours": oriented_by(table, "type_parcours"),
        "par_caf_msa": [
            {"caf_msa": key, "libelle": value_label("caf_msa", key), "nouveaux_entrants": n}
            for key in keys_of(table, "caf_msa")
            if (n := table.value("nouveaux_entrants", "caf_msa", key))
        ],
        "transmission": transmission(ctx),
    }


def transmission(ctx: Context) -> dict[str, Any]:
    """How often the CAF/MSA actually transmitted (annex 4: "Préciser ... la fréquence avec laquelle la CAF
    transmet les données"): the whole of the table `transmission` (the days on which applied beneficiary
    files were received, several the same day counting once)."""
    table = transmission_table(ctx)
    keys = ("jours_de_reception", "receptions_par_semaine", "ecart_median_jours", "ecart_max_jours")
    return {key: table.value(key, ENSEMBLE, ENSEMBLE) for key in keys}
