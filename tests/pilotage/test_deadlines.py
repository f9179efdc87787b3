"""The 15-day and one-month deadlines are defined once (app/rules/deadlines.py) and agree with the rule that
marks an episode oriented within them (app/rules/episodes.py: `within_15_days`, `within_one_month`)."""

from __future__ import annotations

from datetime import date, timedelta

from app.rules.config import DEFAULT, DROIT_CLOS, DROIT_OUVERT
from app.rules.deadlines import deadline_15_days, deadline_one_month, latest_t0_overdue, overdue_15_days
from app.rules.episodes import Episode, Event, _orient


def _oriented_on(t0: date, on: date) -> Episode:
    episode = Episode(t0=t0, t0_file_id=None, criteria={})
    _orient(episode, Event(type="orientation", on=on, key="o"), DEFAULT)
    return episode


def test_the_seed_example_and_the_end_of_a_month():
    assert deadline_15_days(date(2024, 3, 1)) == date(2024, 3, 15)  # seed: T0 01/03, letter before 16/03
    assert deadline_one_month(date(2024, 3, 1)) == date(2024, 3, 31)
    assert deadline_one_month(date(2025, 1, 31)) == date(2025, 2, 27)
    assert deadline_one_month(date(2024, 1, 31)) == date(2024, 2, 28)
    assert not overdue_15_days(date(2024, 3, 1), date(2024, 3, 15))
    assert overdue_15_days(date(2024, 3, 1), date(2024, 3, 16))
    assert latest_t0_overdue(date(2024, 3, 16)) == date(2024, 3, 1)
    assert set(DROIT_OUVERT) == {"2", "3", "4"} and set(DROIT_CLOS) == {"5", "6"}


def test_the_deadlines_are_the_last_days_the_rule_counts():
    for t0 in (date(2024, 1, 31), date(2024, 2, 29), date(2024, 12, 20), date(2025, 3, 1)):
        last15, last1m = deadline_15_days(t0), deadline_one_month(t0)
        assert (
            _oriented_on(t0, last15).within_15_days and not _oriented_on(t0, last15 + timedelta(days=1)).within_15_days
        )
        assert _oriented_on(t0, last1m).within_one_month
        assert not _oriented_on(t0, last1m + timedelta(days=1)).within_one_month
