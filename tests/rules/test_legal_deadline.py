"""The legal deadline of CASF art. D.262-65-2 (décret n° 2024-1244): "dans un délai de six semaines à compter
de la réception par ses services de l'information relative soit à l'ouverture du droit au revenu de
solidarité active, soit au transfert du droit au revenu de solidarité active dans son département,
l'opérateur France Travail procède à son orientation" (docs/rules.md, "The legal deadline")."""

from __future__ import annotations

from datetime import date

from app.rules.config import RulesConfig
from app.rules.deadlines import (
    france_travail_may_orient_from,
    legal_deadline,
    legal_deadline_near,
    legal_deadline_past,
    oriented_within_six_weeks,
)
from app.rules.episodes import OUVERTURE_DROIT, TRANSFERT_DROIT, Event, FluxFact, compute_episodes

_seq = iter(range(1, 10**9))


def fact(day: date, etat: str | None = "2", sdd: bool | None = True, role: str = "DEM", **kw) -> FluxFact:
    n = next(_seq)
    present = kw.pop("present", True)
    return FluxFact(
        received_on=day,
        order=(day, n, 0),
        present=present,
        etat=etat if present else None,
        sdd=sdd if present else None,
        role=role,
        file_id=n,
        **kw,
    )


def only_episode(facts, events=()):
    result = compute_episodes(facts, events, RulesConfig())
    assert len(result.episodes) == 1, result
    return result.episodes[0]


def test_the_decrees_example_reception_on_01_03_france_travail_may_orient_from_12_04():
    # 01/03 + 42 days: 30 days to 31/03, 12 more to 12/04
    assert legal_deadline(date(2025, 3, 1)) == date(2025, 4, 12)
    assert france_travail_may_orient_from(date(2025, 3, 1)) == date(2025, 4, 12)
    # a month of 30 days and a leap February: 01/04 + 42 = 13/05; 20/02/2028 + 42 = 02/04/2028
    assert legal_deadline(date(2025, 4, 1)) == date(2025, 5, 13)
    assert legal_deadline(date(2028, 2, 20)) == date(2028, 4, 2)


def test_six_weeks_boundary_11_04_within_12_04_not():
    deadline = legal_deadline(date(2025, 3, 1))
    assert oriented_within_six_weeks(deadline, date(2025, 4, 11)) is True
    assert oriented_within_six_weeks(deadline, date(2025, 4, 12)) is False
    assert oriented_within_six_weeks(None, date(2025, 4, 1)) is None  # no legal clock
    # the worklist's flags, seen on a day, with 7 warning days
    assert not legal_deadline_near(deadline, date(2025, 4, 4), 7)  # 8 days ahead
    assert legal_deadline_near(deadline, date(2025, 4, 5), 7)  # 7 days ahead
    assert legal_deadline_near(deadline, date(2025, 4, 11), 7)
    assert not legal_deadline_past(deadline, date(2025, 4, 11))
    assert legal_deadline_past(deadline, date(2025, 4, 12)) and not legal_deadline_near(deadline, date(2025, 4, 12), 7)


def test_opening_of_the_right_a_person_unknown_before():
    ep = only_episode([fact(date(2025, 3, 1))])
    assert ep.t0 == date(2025, 3, 1)
    assert ep.legal_clock == OUVERTURE_DROIT
    assert ep.legal_deadline == date(2025, 4, 12)
    assert "no earlier file" in (ep.legal_clock_reason or "")


def test_opening_of_the_right_a_demand_awaiting_then_open_and_a_closed_right_reopened():
    # ETATDOSRSA 0 (demand awaiting the Département's decision) on 10/02, open on 05/03
    ep = only_episode([fact(date(2025, 2, 10), etat="0"), fact(date(2025, 3, 5))])
    assert (ep.legal_clock, ep.legal_deadline) == (OUVERTURE_DROIT, date(2025, 4, 16))
    assert "ETATDOSRSA 0" in (ep.legal_clock_reason or "")
    # closed (5) in January, reopened on 03/03
    ep = only_episode([fact(date(2025, 1, 15), etat="5"), fact(date(2025, 3, 3))])
    assert (ep.legal_clock, ep.legal_deadline) == (OUVERTURE_DROIT, date(2025, 4, 14))


def test_transfer_in_from_another_organisme():
    """A foyer arriving from another département: the T0 file carries OrganismeCedant (DDARRMUT 20/02)."""
    ep = only_episode([fact(date(2025, 3, 1), transfer_in_on=date(2025, 2, 20), transfer_in_from="CAF 541")])
    assert ep.legal_clock == TRANSFERT_DROIT
    assert ep.legal_deadline == date(2025, 4, 12)
    assert "CAF 541" in (ep.legal_clock_reason or "") and "2025-02-20" in (ep.legal_clock_reason or "")


def test_moved_away_and_back_is_a_transfer_but_a_transfer_already_known_is_not():
    # the right closed MUT in January (moved away), back with OrganismeCedant on 03/03
    ep = only_episode(
        [
            fact(date(2025, 1, 10), etat="5", closure_motif="MUT"),
            fact(date(2025, 3, 3), transfer_in_on=date(2025, 2, 25)),
        ]
    )
    assert ep.legal_clock == TRANSFERT_DROIT
    # the same OrganismeCedant was on the person's files since January, right open above the threshold:
    # becoming soumis on 03/03 is no transfer (and no opening)
    ep = only_episode(
        [
            fact(date(2025, 1, 10), sdd=False, transfer_in_on=date(2025, 1, 5)),
            fact(date(2025, 3, 3), transfer_in_on=date(2025, 1, 5)),
        ]
    )
    assert ep.legal_clock is None and ep.legal_deadline is None


def test_back_under_the_threshold_no_clock_and_why():
    """Right open (2) but above the 500 € threshold (TOPPERSDRODEVORSA 0) in January; soumis again on
    03/03: the decree's clock does not apply, the convention's does."""
    ep = only_episode([fact(date(2025, 1, 10), sdd=False), fact(date(2025, 3, 3))])
    assert ep.t0 == date(2025, 3, 3)
    assert ep.legal_clock is None and ep.legal_deadline is None
    reason = ep.legal_clock_reason or ""
    assert reason.startswith("no legal clock") and "500 € threshold" in reason and "2025-01-10" in reason
    assert len(reason) <= 200


def test_end_of_a_suspension_and_a_role_change_no_clock():
    ep = only_episode([fact(date(2025, 1, 10), etat="3"), fact(date(2025, 3, 3))])
    assert ep.legal_clock is None and "end of a suspension" in (ep.legal_clock_reason or "")
    ep = only_episode([fact(date(2025, 1, 10), role="ENF", sdd=False), fact(date(2025, 3, 3), role="CJT")])
    assert ep.legal_clock is None and "role change (ENF to CJT)" in (ep.legal_clock_reason or "")


def test_a_new_rsa_demand_is_an_opening():
    ep = only_episode(
        [fact(date(2025, 1, 10), sdd=False, numdemrsa="55000000001"), fact(date(2025, 3, 3), numdemrsa="55000000002")]
    )
    assert ep.legal_clock == OUVERTURE_DROIT and "NUMDEMRSA" in (ep.legal_clock_reason or "")


def test_opened_before_t0_counts_from_the_file_that_brought_the_opening():
    """Closed in February; opened above the threshold on 03/03; soumis on 10/03 (T0): the decree counts from
    "la réception [...] de l'information relative à l'ouverture du droit", the file of 03/03 (03/03 + 42 days
    = 14/04), not from T0 (21/04)."""
    ep = only_episode([fact(date(2025, 2, 10), etat="5"), fact(date(2025, 3, 3), sdd=False), fact(date(2025, 3, 10))])
    assert ep.t0 == date(2025, 3, 10)
    assert (ep.legal_clock, ep.legal_deadline) == (OUVERTURE_DROIT, date(2025, 4, 14))
    assert "file of 2025-03-03" in (ep.legal_clock_reason or "")


def test_an_opening_counts_back_to_the_first_day_of_the_previous_month_not_before():
    """The window of docs/rules.md: an opening received on 01/02 still counts for a T0 on 05/03 (01/02 + 42 =
    15/03); one received on 31/01 is too old (the right was open for over a month: no clock)."""
    ep = only_episode([fact(date(2025, 1, 20), etat="5"), fact(date(2025, 2, 1), sdd=False), fact(date(2025, 3, 5))])
    assert (ep.legal_clock, ep.legal_deadline) == (OUVERTURE_DROIT, date(2025, 3, 15))
    ep = only_episode([fact(date(2025, 1, 20), etat="5"), fact(date(2025, 1, 31), sdd=False), fact(date(2025, 3, 5))])
    assert ep.legal_clock is None and "since 2025-01-31" in (ep.legal_clock_reason or "")


def test_the_clock_does_not_depend_on_the_orientation():
    ep = only_episode([fact(date(2025, 3, 1))], [Event(type="orientation", on=date(2025, 4, 12), key="o")])
    assert ep.legal_deadline == date(2025, 4, 12)
    assert oriented_within_six_weeks(ep.legal_deadline, ep.end_on) is False


def test_the_initial_stock_is_an_earlier_file_like_any_other():
    # at the stock, right open above the threshold (not soumis): soumis on 03/03 is no opening
    ep = only_episode([fact(date(2025, 1, 10), sdd=False, initial_stock=True), fact(date(2025, 3, 3))])
    assert ep.legal_clock is None and "500 €" in (ep.legal_clock_reason or "")
    # at the stock, right closed: open on 03/03 is an opening
    ep = only_episode([fact(date(2025, 1, 10), etat="5", initial_stock=True), fact(date(2025, 3, 3))])
    assert (ep.legal_clock, ep.legal_deadline) == (OUVERTURE_DROIT, date(2025, 4, 14))


def test_absent_from_the_previous_file_then_back_is_an_opening():
    ep = only_episode(
        [fact(date(2025, 1, 10), sdd=False), fact(date(2025, 2, 3), present=False, absence_reason="absent_full_file"),
         fact(date(2025, 3, 3))]
    )  # fmt: skip
    assert ep.legal_clock == OUVERTURE_DROIT and "absent from the previous file" in (ep.legal_clock_reason or "")
