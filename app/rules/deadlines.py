"""The orientation deadlines counted from T0, defined once (their lengths are `RulesConfig.delay_days` and
`fallback_months`): the 15-day deadline and the one-month one; and the legal deadline of CASF art.
D.262-65-2 (décret n° 2024-1244: six weeks). Pure functions over dates."""

from __future__ import annotations

from datetime import date, timedelta

from app.rules.config import DEFAULT, RulesConfig
from app.rules.episodes import add_months, legal_deadline_from


def deadline_15_days(t0: date, config: RulesConfig = DEFAULT) -> date:
    """The last day an orientation counts as made within 15 days of T0 (T0 01/03: 15/03)."""
    return t0 + timedelta(days=config.delay_days - 1)


def deadline_one_month(t0: date, config: RulesConfig = DEFAULT) -> date:
    """The last day an orientation counts as made within one month of T0 (T0 31/01: 27/02 or 28/02)."""
    return add_months(t0, config.fallback_months) - timedelta(days=1)


def overdue_15_days(t0: date, day: date, config: RulesConfig = DEFAULT) -> bool:
    """Waiting on `day`, the 15 days are over."""
    return day > deadline_15_days(t0, config)


def latest_t0_overdue(day: date, config: RulesConfig = DEFAULT) -> date:
    """The latest T0 whose 15 days are over on `day` (a T0 on or before it is overdue)."""
    return day - timedelta(days=config.delay_days)


# CASF art. D.262-65-2 (décret n° 2024-1244 du 30 décembre 2024): "dans un délai de six semaines à compter de la
# réception par ses services de l'information relative soit à l'ouverture du droit [...], soit au transfert du
# droit [...] dans son département, l'opérateur France Travail procède à son orientation"
# (`RulesConfig.legal_deadline_days`, 42).


def legal_deadline(received_on: date, config: RulesConfig = DEFAULT) -> date:
    """The legal deadline of an episode whose T0 file brought the opening or the transfer of the right: the
    reception day + 42 days, THE FIRST DAY France Travail may orient (reception 01/03 -> 12/04). The
    Département's orientation is within the six weeks when dated before it (on 11/04 at the latest:
    `oriented_within_six_weeks`); docs/rules.md, "The legal deadline"."""
    return legal_deadline_from(received_on, config)


def france_travail_may_orient_from(received_on: date, config: RulesConfig = DEFAULT) -> date:
    """The day from which France Travail may orient the person (the same day as `legal_deadline`)."""
    return legal_deadline(received_on, config)


def oriented_within_six_weeks(deadline: date | None, decided_on: date | None) -> bool | None:
    """An orientation decided on `decided_on` is within the six weeks when dated before the legal deadline
    (None: no legal clock)."""
    if deadline is None:
        return None
    return decided_on is not None and decided_on < deadline


def legal_deadline_past(deadline: date | None, day: date) -> bool:
    """Waiting on `day`, France Travail may orient: the day is the legal deadline or after it."""
    return deadline is not None and day >= deadline


def legal_deadline_near(deadline: date | None, day: date, warning_days: int) -> bool:
    """Waiting on `day`, the legal deadline falls within `warning_days` days (not yet reached)."""
    return deadline is not None and day < deadline <= day + timedelta(days=warning_days)
