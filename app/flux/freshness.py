"""Is a CAF or an MSA silent? (issue #26, docs/pilotage.md "Freshness"): for each département and organisme
(FONORG of the files received: CAF, MSA), the last beneficiary file applied and the working days elapsed since,
up to as_of. More than `PASSERELLE_PILOTAGE_GAP_DAYS` working days: `silencieux`.

Working days: Monday to Friday less the French public holidays of the département's calendar, from the
`holidays` package: metropolitan France; Alsace-Moselle (57, 67, 68) adds Vendredi saint and the 26 décembre;
the overseas départements (971 to 976) their own days (abolition of slavery...). The days elapsed between a
file received on day `a` and day `b` are the working days `d` with `a < d <= b` (Friday to Monday: 1).

Which files count: applied files of nature D (beneficiary), whatever their TYPEFLUX (daily, monthly, initial
stock), as the `transmission` table counts them: each one is the organisme's state of its beneficiaries on
that day. Rejected files and instruction files (nature I) do not count: the beneficiary data did not move.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

import holidays
from sqlalchemy import Connection, func, select

from app.models import FluxFile

OK = "ok"
SILENT = "silencieux"
# the département codes (3 characters, as stored) whose calendar is not metropolitan France's; the holidays
# package's subdivision "57" is Alsace-Moselle, the three départements of the local law
SUBDIVISIONS = {"057": "57", "067": "57", "068": "57", "971": "971", "972": "972", "973": "973", "974": "974",
                "976": "976"}  # fmt: skip


@lru_cache(maxsize=256)
def _public_holidays(departement: str | None, year: int) -> frozenset[date]:
    subdiv = SUBDIVISIONS.get(departement or "")
    return frozenset(holidays.country_holidays("FR", subdiv=subdiv, years=year))


def is_working_day(day: date, departement: str | None = None) -> bool:
    return day.weekday() < 5 and day not in _public_holidays(departement, day.year)


def working_days_between(start: date, end: date, departement: str | None = None) -> int:
    """The working days `d` with `start < d <= end` (0 when `end <= start`)."""
    # by offset: never a day past `end` (end 9999-12-31, the last date a date holds: OverflowError)
    return sum(is_working_day(start + timedelta(days=n), departement) for n in range(1, (end - start).days + 1))


@dataclass(frozen=True)
class Freshness:
    departement: str
    organisme: str | None  # CAF, MSA; None for a département no beneficiary file ever came to
    last_received_on: date | None
    working_days: int | None  # since the last file, up to as_of; None without a file
    status: str  # ok | silencieux

    @property
    def silent(self) -> bool:
        return self.status == SILENT

    def as_json(self) -> dict[str, Any]:
        return {
            "departement": self.departement,
            "organisme": self.organisme,
            "dernier_fichier_recu": self.last_received_on.isoformat() if self.last_received_on else None,
            "jours_ouvres_depuis": self.working_days,
            "status": self.status,
        }

    def message(self, with_departement: bool = False) -> str:
        """The alert in French, e.g. "Aucun fichier CAF reçu depuis le 02/12/2026 (4 jours ouvrés)"."""
        who = self.organisme or "CAF/MSA"
        where = f" (département {self.departement})" if with_departement or self.last_received_on is None else ""
        if self.last_received_on is None or self.working_days is None:
            return f"Aucun fichier {who} reçu{where}."
        plural = "s" if self.working_days > 1 else ""
        since = self.last_received_on.strftime("%d/%m/%Y")
        return f"Aucun fichier {who} reçu depuis le {since} ({self.working_days} jour{plural} ouvré{plural}){where}."


def freshness(conn: Connection, departements: Iterable[str], as_of: date, gap_days: int) -> list[Freshness]:
    """Each département's organismes (those that ever sent a beneficiary file applied up to as_of), sorted; a
    département with none gets one line, organisme None, `silencieux`."""
    ff = FluxFile.__table__.c
    chosen = sorted(set(departements))
    rows = conn.execute(
        select(ff.departement_code, ff.fonorg, func.max(ff.received_on))
        .where(
            ff.departement_code.in_(chosen),
            ff.status == "applied",
            ff.nature == "D",
            ff.received_on <= as_of,
        )
        .group_by(ff.departement_code, ff.fonorg)
    ).all()
    out: list[Freshness] = []
    for dep in chosen:
        mine = sorted(((r[1], r[2]) for r in rows if r[0] == dep), key=lambda r: r[0] or "")
        if not mine:
            out.append(Freshness(dep, None, None, None, SILENT))
        for organisme, last in mine:
            days = working_days_between(last, as_of, dep)
            out.append(Freshness(dep, organisme, last, days, SILENT if days > gap_days else OK))
    return out


def overall(lines: Iterable[Freshness]) -> str:
    return SILENT if any(f.silent for f in lines) else OK
