"""The contrat d'engagement's one-month deadline (Code du travail art. D.5411-14-1, docs/rules.md): counted from
the notification of the orientation decision, restarted by a new orientation decision."""

from __future__ import annotations

from datetime import date

from app.rules.episodes import (
    CE,
    Event,
    FluxFact,
    compute_episodes,
    contract_after_orientation_as_of,
    contract_deadline_as_of,
    last_ce_as_of,
    last_cer_as_of,
    last_contract_as_of,
    orientation_as_of,
)

_n = iter(range(1, 10**6))


def fact(day: date, etat: str = "2", sdd: bool = True) -> FluxFact:
    n = next(_n)
    return FluxFact(received_on=day, order=(day, n, 0), present=True, etat=etat, sdd=sdd, role="DEM", file_id=n)


def ev(kind: str, day: date, **kw) -> Event:
    return Event(type=kind, on=day, key=f"{kind}-{day}-{next(_n)}", **kw)


def d(s: str) -> date:
    day, month, year = s.split("/")
    return date(int(year), int(month), int(day))


def episode(events):
    """An entrant of T0 01/03/2025 (absent the month before), with these events."""
    facts = [fact(d("01/02/2025"), sdd=False), fact(d("01/03/2025"))]
    (ep,) = compute_episodes(facts, events).episodes
    return ep


ORIENTED = ev("orientation", d("15/03/2025"), organisme="DEPARTEMENT", type_parcours="social")


def test_oriented_on_15_03_the_deadline_is_15_04_inclusive():
    """ "dans un délai d'un mois à compter de la notification de la décision d'orientation": 15/03 -> 15/04."""
    in_time = episode([ORIENTED, ev("contrat_engagement", d("15/04/2025"), organisme="DEPARTEMENT")])
    late = episode([ORIENTED, ev("contrat_engagement", d("16/04/2025"), organisme="DEPARTEMENT")])
    for ep in (in_time, late):
        assert ep.orientations == [(d("15/03/2025"), "social")]
        assert contract_deadline_as_of(ep, d("20/04/2025")) == d("15/04/2025")
    signed_in_time = contract_after_orientation_as_of(in_time, d("20/04/2025"))
    signed_late = contract_after_orientation_as_of(late, d("20/04/2025"))
    assert signed_in_time == d("15/04/2025") and signed_in_time <= contract_deadline_as_of(in_time, d("20/04/2025"))
    assert signed_late == d("16/04/2025") and signed_late > contract_deadline_as_of(late, d("20/04/2025"))
    # as known on 15/04, the late one is still waiting (the CE of 16/04 is not known yet)
    assert contract_after_orientation_as_of(late, d("15/04/2025")) is None
    assert in_time.contrats == [(d("15/04/2025"), CE)]
    assert in_time.contrats_engagement == [(d("15/04/2025"), "DEPARTEMENT")]


def test_not_oriented_by_as_of_has_no_deadline():
    ep = episode([ORIENTED])
    assert contract_deadline_as_of(ep, d("14/03/2025")) is None
    assert orientation_as_of(ep, d("15/03/2025")) == d("15/03/2025")
    assert contract_deadline_as_of(episode([]), d("01/06/2025")) is None


def test_a_reorientation_restarts_the_clock_and_an_earlier_contract_no_longer_answers_it():
    """ "La nouvelle décision d'orientation notifiée ouvre un nouveau délai d'un mois"."""
    ep = episode(
        [
            ORIENTED,
            ev("contrat_engagement", d("01/04/2025"), organisme="DEPARTEMENT"),
            ev("orientation", d("20/05/2025"), organisme="FRANCE_TRAVAIL", type_parcours="professionnel"),
        ]
    )
    assert ep.orientations == [(d("15/03/2025"), "social"), (d("20/05/2025"), "professionnel")]
    # before the re-orientation: the CE of 01/04 answered the first orientation
    assert contract_after_orientation_as_of(ep, d("19/05/2025")) == d("01/04/2025")
    assert contract_deadline_as_of(ep, d("19/05/2025")) == d("15/04/2025")
    # from the re-orientation: a new month, and the CE of 01/04 no longer satisfies it
    assert contract_deadline_as_of(ep, d("20/05/2025")) == d("20/06/2025")
    assert contract_after_orientation_as_of(ep, d("30/06/2025")) is None
    # the episode's own orientation is unchanged (the first one ended it)
    assert ep.end_on == d("15/03/2025") and ep.orientation is not None and ep.orientation.organisme == "DEPARTEMENT"


def test_a_reorientation_by_france_travail_or_a_referent_later():
    """A référent designated later is no new orientation decision; an orientation event is, whoever made it."""
    ep = episode([ORIENTED, ev("referent", d("01/04/2025"), structure="CCAS")])
    assert ep.orientations == [(d("15/03/2025"), "social")]


def test_the_contracts_readers_see_the_ce():
    ep = episode(
        [
            ORIENTED,
            ev("contrat_engagement", d("20/03/2025"), organisme="FRANCE_TRAVAIL"),
            ev("contrat_engagement", d("10/06/2025"), organisme="DEPARTEMENT", structure="MDS"),
        ]
    )
    assert last_contract_as_of(ep.contrats, d("01/05/2025")) == (d("20/03/2025"), CE)
    assert last_cer_as_of(ep.contrats, d("01/05/2025")) == d("20/03/2025")
    assert last_ce_as_of(ep, d("01/05/2025")) == (d("20/03/2025"), "FRANCE_TRAVAIL")
    assert last_ce_as_of(ep, d("30/06/2025")) == (d("10/06/2025"), "DEPARTEMENT")
    assert last_ce_as_of(ep, d("19/03/2025")) is None


def test_a_cer_before_2025_answers_an_orientation_of_its_time():
    facts = [fact(d("01/02/2024"), sdd=False), fact(d("01/03/2024"))]
    events = [
        ev("orientation", d("10/03/2024"), organisme="DEPARTEMENT"),
        ev("contrat", d("20/03/2024"), contrat="CER"),
    ]
    (ep,) = compute_episodes(facts, events).episodes
    assert contract_after_orientation_as_of(ep, d("01/04/2024")) == d("20/03/2024")


class _Stored:
    """A row stored before revision 0024: no `orientations` column value."""

    outcome, end_on, type_parcours, orientations, contrats = "oriente", d("15/03/2025"), "social", None, None


def test_an_episode_stored_before_the_column_reads_its_own_orientation():
    assert contract_deadline_as_of(_Stored(), d("01/04/2025")) == d("15/04/2025")
    assert contract_deadline_as_of(_Stored(), d("14/03/2025")) is None
