"""The orientation deadlines counted from T0, defined once (their lengths are `RulesConfig.delay_days` and
`fallback_months`): the 15-day deadline and the one-month one. Pure functions over dates."""

from __future__ import annotations

from datetime import date, timedelta

from app.rules.config import DEFAULT, RulesConfig
from app.rules.episodes import add_months


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
