"""Issue #25: an orientation France Travail decided orients like any (`oriented_by = "france_travail"`); a
préconisation (read as `preconisation_ft`) never ends an episode nor opens a follow-up; of two orientations
of one day, the platform's is taken first, whatever the order they are given in."""

from __future__ import annotations

import itertools
from datetime import date, timedelta

from app.rules.episodes import FT_NOT_ORIENTING, Event, FluxFact, compute_episodes

T0 = date(2025, 3, 3)


def _fact(day: date, n: int) -> FluxFact:
    return FluxFact(received_on=day, order=(day, n, 0), present=True, etat="2", sdd=True, role="DEM", file_id=n)


FACTS = [_fact(T0, 1)]


def test_a_decision_by_france_travail_after_six_weeks_ends_the_episode():
    decided = T0 + timedelta(days=45)  # 17/04/2025, past the decree's 42 days
    ft = Event("orientation", decided, "ft:1", "FRANCE_TRAVAIL", "social", by_france_travail=True)
    [ep] = compute_episodes(FACTS, [ft]).episodes
    assert (ep.outcome, ep.end_on, ep.oriented_by, ep.delay_days) == ("oriente", decided, "france_travail", 45)
    assert ep.within_15_days is False and ep.within_one_month is False


def test_a_preconisation_ends_nothing_and_opens_no_follow_up():
    pre = Event(FT_NOT_ORIENTING, T0 + timedelta(days=10), "ft:2", "FRANCE_TRAVAIL", "social", by_france_travail=True)
    result = compute_episodes(FACTS, [pre])
    [ep] = result.episodes
    assert ep.outcome == "en_attente" and ep.end_on is None and result.followed is False


def test_the_platform_s_orientation_of_the_same_day_first_whatever_the_order():
    day = T0 + timedelta(days=20)
    platform = Event("orientation", day, "#000000000009", "DEPARTEMENT", "social")
    ft = Event("orientation", day, "ft:3", "FRANCE_TRAVAIL", "professionnel", by_france_travail=True)
    seen = set()
    for events in itertools.permutations([platform, ft]):
        [ep] = compute_episodes(FACTS, list(events)).episodes
        seen.add((ep.oriented_by, ep.orientation.organisme if ep.orientation else None, ep.end_on))
    assert seen == {("orientation", "DEPARTEMENT", day)}


def test_france_travail_s_record_of_the_parcours_in_force_is_no_re_orientation():
    """The platform orients on 20/03 (social); France Travail's answer gives the same parcours decided on
    25/03 (its own record of it, e.g. the Département's push dated by France Travail): the contract's clock
    stays at 20/03. A France Travail decision of another parcours is a re-orientation: the clock restarts."""
    from app.rules.episodes import contract_deadline_as_of

    platform = Event("orientation", date(2025, 3, 20), "p", "DEPARTEMENT", "social")
    echo = Event("orientation", date(2025, 3, 25), "ft:e", "DEPARTEMENT", "social", by_france_travail=True)
    [ep] = compute_episodes(FACTS, [platform, echo]).episodes
    assert ep.orientations == [(date(2025, 3, 20), "social")]
    assert contract_deadline_as_of(ep, date(2025, 4, 30)) == date(2025, 4, 20)
    other = Event("orientation", date(2025, 5, 2), "ft:o", "FRANCE_TRAVAIL", "professionnel", by_france_travail=True)
    [ep] = compute_episodes(FACTS, [platform, echo, other]).episodes
    assert ep.orientations == [(date(2025, 3, 20), "social"), (date(2025, 5, 2), "professionnel")]
    assert contract_deadline_as_of(ep, date(2025, 5, 10)) == date(2025, 6, 2)


def test_a_decision_france_travail_refused_or_cancelled_orients_nobody():
    """`decision.etat_decision` naming a refusal (its codes are not published): read as a préconisation."""
    from types import SimpleNamespace

    from app.orientation.episodes import as_rule_event

    def row(etat: str | None) -> SimpleNamespace:
        return SimpleNamespace(
            id=1, type="orientation", source="france_travail", ft_statut="DECIDE", ft_etat_decision=etat,
            event_date=T0 + timedelta(days=45), external_id="ft:1:D:x", organisme="FRANCE_TRAVAIL",
            type_parcours="social", accompagnement_global=None, structure=None, presence=None, contrat_type=None,
        )  # fmt: skip

    assert as_rule_event(row("VALIDEE")).type == "orientation"
    assert as_rule_event(row(None)).type == "orientation"
    for refused in ("REFUSEE", "refus_usager", "ANNULEE", "REJETEE"):
        assert as_rule_event(row(refused)).type == FT_NOT_ORIENTING, refused
