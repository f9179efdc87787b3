"""The tests' clock: the service's one clock (`app.clock.today(settings)`), fixed or passed on.

A test that needs a given business date fixes it on its settings (`on_day`), never on the machine; a test
that starts a child process gives it its own date (`clock_env`), so that the child and the test agree on
today even under faketime (which a child without LD_PRELOAD does not see) or across midnight."""

from __future__ import annotations

from datetime import date

from app.clock import today
from app.settings import Settings


def on_day(settings: Settings, day: date) -> Settings:
    """These settings with the business date fixed to `day` (PASSERELLE_TODAY)."""
    return settings.model_copy(update={"today": day})


def clock_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process the test's business date (`PASSERELLE_TODAY`)."""
    return {"PASSERELLE_TODAY": today(settings).isoformat()}
