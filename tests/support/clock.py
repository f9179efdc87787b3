"""The tests' clock: the service's one clock (`app.clock.today(settings)`), fixed or passed on.

A test that needs a given business date fixes it on its settings (`on_day`), never on the machine; a test
that starts a child process gives it its own date (`clock_env`), so that the child and the test agree on
today even under faketime (which a child without LD_PRELOAD does not see) or across midnight."""

from __future__ import annotations

import os
from datetime import date

from app.clock import today
from app.settings import Settings


def on_day(settings: Settings, day: date) -> Settings:
    """These settings with the business date fixed to `day` (PASSERELLE_TODAY)."""
    return settings.model_copy(update={"today": day})


def clock_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process the test's business date (`PASSERELLE_TODAY`)."""
    return {"PASSERELLE_TODAY": today(settings).isoformat()}


# faketime's variables: libfaketime 0.9.10 fakes CLOCK_MONOTONIC too, and a thread's wait with a timeout
# (threading.Event.wait, Lock.acquire(timeout=)) then never ends in that process (seen: `ft sync` against a
# France Travail that is down, waiting out the circuit's cool-down). A child gets its date from
# PASSERELLE_TODAY instead, the way the service is meant to be given a date.
_FAKETIME = (
    "LD_PRELOAD",
    "FAKETIME",
    "FAKETIME_FORCE_MONOTONIC_FIX",
    "DONT_FAKE_MONOTONIC",
    "FAKETIME_DONT_FAKE_MONOTONIC",
)


def child_environ(settings: Settings) -> dict[str, str]:
    """This process's environment for a child process, with the test's business date and without faketime's
    preload (the child takes its date from `PASSERELLE_TODAY`)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("FAKETIME", "DONT_FAKE_MONOTONIC"))}
    preload = " ".join(lib for lib in inherited.pop("LD_PRELOAD", "").split() if "faketime" not in lib)
    if preload:
        inherited["LD_PRELOAD"] = preload
    return inherited | clock_env(settings)
