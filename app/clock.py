"""The one clock of the service: the business date it takes for today.

Business dates (a flux's reception, an orientation's notification, the as-of date of a figure) are dates in
the Département's timezone (`PASSERELLE_BUSINESS_TIMEZONE`, Europe/Paris). Every "today" of the service comes
from here, from the settings it is given: never from the process-wide settings behind its caller's back. Tests
and demos may fix the date with `PASSERELLE_TODAY` (refused in prod); timestamps (`created_at`, leases, audit
events) stay UTC instants (`app.models.base.utcnow`).
"""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from app.settings import Settings


def today(settings: Settings) -> date:
    """Today's business date: `settings.today` when fixed, else today in the business timezone."""
    if settings.today is not None:
        return settings.today
    return datetime.now(ZoneInfo(settings.business_timezone)).date()
