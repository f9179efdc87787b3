"""Indicator 1 and 2 of annex 4 emploi: nouveaux entrants and their orientation within 15 days / one month.

Computed from the stored entry episodes (derived from every fact) seen from an as-of date: an episode counts
if its T0 is in [from, to] and on or before as_of; its outcome counts if decided on or before as_of. So the
same period and as-of give the same figures whenever they are asked, and a late fact dated earlier is
simply taken into account.
"""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import date
from itertools import pairwise
from typing import Any

from sqlalchemy import Connection, select

from app.models import EntryEpisode, FluxFile

DELAY_BUCKETS = ((0, 7, "0-7"), (8, 14, "8-14"), (15, 30, "15-30"), (31, 10**6, "31+"))


def _rate(n: int, d: int) -> float | None:
    return round(n / d, 4) if d else None


def orientation_indicator(
    conn: Connection, departements: list[str], start: date, end: date, as_of: date
) -> dict[str, Any]:
    ee = EntryEpisode.__table__.c
    # Only the columns counted (not the criteria, a JSON document per episode).
    rows = conn.execute(
        select(
            ee.t0,
            ee.outcome,
            ee.end_on,
            ee.delay_days,
            ee.within_15_days,
            ee.within_one_month,
            ee.organisme,
            ee.type_parcours,
            ee.accompagnement_global,
            ee.rdv_orientation_absent,
            ee.rdv_orientation_on,
            ee.caf_msa,
        ).where(ee.departement_code.in_(departements), ee.t0 >= start, ee.t0 <= min(end, as_of))
    ).all()
    oriented, waiting, left = [], [], []
    for r in rows:
        decided = r.end_on is not None and r.end_on <= as_of
        if decided and r.outcome == "oriente":
            oriented.append(r)
        elif decided and r.outcome == "sorti_avant_orientation":
            left.append(r)
        else:
            waiting.append(r)
    delays = [r.delay_days for r in oriented]
    ages = [(as_of - r.t0).days for r in waiting]
    by_organisme: Counter[str] = Counter(r.organisme or "non_precise" for r in oriented)
    by_parcours: Counter[str] = Counter(r.type_parcours or "non_precise" for r in oriented)
    by_caf_msa: Counter[str] = Counter(r.caf_msa or "non_precise" for r in rows)

    def breakdown(counter: Counter[str], key: str) -> list[dict[str, Any]]:
        out = []
        for value, n in sorted(counter.items()):
            group = [r for r in oriented if (getattr(r, key) or "non_precise") == value]
            out.append(
                {
                    key: value,
                    "orientes": n,
                    "orientes_15j": sum(1 for r in group if r.within_15_days),
                    "delai_moyen_jours": round(statistics.mean(r.delay_days for r in group), 1) if group else None,
                }
            )
        return out

    return {
        "departements": departements,
        "from": start.isoformat(),
        "to": end.isoformat(),
        "as_of": as_of.isoformat(),
        "nouveaux_entrants": len(rows),
        "orientes": len(oriented),
        "orientes_15j": sum(1 for r in oriented if r.within_15_days),
        "orientes_1mois": sum(1 for r in oriented if r.within_one_month),
        "taux_15j": _rate(sum(1 for r in oriented if r.within_15_days), len(rows)),
        "taux_1mois": _rate(sum(1 for r in oriented if r.within_one_month), len(rows)),
        "delai_moyen_jours": round(statistics.mean(delays), 1) if delays else None,
        "delai_median_jours": statistics.median(delays) if delays else None,
        "distribution_delais": {label: sum(1 for x in delays if lo <= x <= hi) for lo, hi, label in DELAY_BUCKETS},
        "en_attente": len(waiting),
        "en_attente_age_jours": {
            "max": max(ages) if ages else None,
            "median": statistics.median(ages) if ages else None,
        },
        "sortis_avant_orientation": len(left),
        "absents_rdv_orientation": sum(
            1 for r in oriented if r.rdv_orientation_absent and (r.rdv_orientation_on or as_of) <= as_of
        ),
        "orientes_accompagnement_global": sum(1 for r in oriented if r.accompagnement_global),
        "par_organisme": breakdown(by_organisme, "organisme"),
        "par_type_parcours": breakdown(by_parcours, "type_parcours"),
        "par_caf_msa": [{"caf_msa": k, "nouveaux_entrants": v} for k, v in sorted(by_caf_msa.items())],
        "transmission": transmission(conn, departements, start, min(end, as_of)),
    }


def transmission(conn: Connection, departements: list[str], start: date, end: date) -> dict[str, Any]:
    """How often the CAF/MSA actually transmitted (annex 4: "Préciser ... la fréquence avec laquelle la CAF
    transmet les données"), observed from the days on which applied files were received: daily, monthly and
    reprise files alike (each is a transmission); several files the same day count once."""
    ff = FluxFile.__table__.c
    days = sorted(
        set(
            conn.execute(
                select(ff.received_on).where(
                    ff.departement_code.in_(departements),
                    ff.status == "applied",
                    ff.nature == "D",  # beneficiary files (an instruction flux is not that transmission)
                    ff.received_on >= start,
                    ff.received_on <= end,
                )
            ).scalars()
        )
    )
    gaps = [(b - a).days for a, b in pairwise(days)]
    weeks = max(1, ((end - start).days + 1) / 7)
    return {
        "jours_de_reception": len(days),
        "receptions_par_semaine": round(len(days) / weeks, 2),
        "ecart_median_jours": statistics.median(gaps) if gaps else None,
        "ecart_max_jours": max(gaps) if gaps else None,
    }


FLAT_KEYS = (
    "nouveaux_entrants",
    "orientes_15j",
    "orientes_1mois",
    "taux_15j",
    "taux_1mois",
    "delai_moyen_jours",
    "delai_median_jours",
    "en_attente",
    "sortis_avant_orientation",
    "absents_rdv_orientation",
    "orientes_accompagnement_global",
)
