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


def faketime_env() -> dict[str, str]:
    """faketime's variables of this process (none outside faketime): a child given them shares the test's
    clock, timestamps included (a download link written by the child expires by the test's clock)."""
    return {k: v for k, v in os.environ.items() if k == "LD_PRELOAD" or k.startswith(("FAKETIME", "DONT_FAKE"))}


def child_environ(settings: Settings) -> dict[str, str]:
    """This process's environment for a child process, with the test's business date (`PASSERELLE_TODAY`)."""
    return {**os.environ, **clock_env(settings)}


def without_faketime(env: dict[str, str]) -> dict[str, str]:
    """`env` without faketime's preload, for a child that waits on a thread with a timeout: Debian's
    libfaketime 0.9.10 fakes the monotonic clock too, and such a wait (threading.Event.wait, a lock acquired
    with a timeout) then never ends (seen: `ft sync` waiting out the circuit's cool-down while France
    Travail is down). The child still gets the test's business date from PASSERELLE_TODAY; its timestamps
    are the machine's."""
    kept = {k: v for k, v in env.items() if not k.startswith(("FAKETIME", "DONT_FAKE"))}
    preload = " ".join(lib for lib in kept.pop("LD_PRELOAD", "").split() if "faketime" not in lib)
    return kept | ({"LD_PRELOAD": preload} if preload else {})


def timed_waits_never_end() -> bool:
    """Whether this process runs under faketime (README), where a wait with a timeout on a lock or a condition
    never returns (Debian's libfaketime 0.9.10 fakes the monotonic clock: see `without_faketime`). A test
    that must make one in its own process (a pool exhausted on purpose) cannot run there."""
    return "faketime" in os.environ.get("LD_PRELOAD", "")
