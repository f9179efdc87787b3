"""The annex-4 rules, case by case against the seed (seeds/001, "Annexe 4 emploi", §4 Paramétrage des
indicateurs du volet 2, around lines 7454-7516). Each test quotes the sentence it checks."""

from __future__ import annotations

import random
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.rules.config import RulesConfig
from app.rules.episodes import (
    Event,
    FluxFact,
    RdvOrientation,
    compute_episodes,
    last_cer_as_of,
    last_contract_as_of,
    latest_as_of,
    outcome_as_of,
    rdv_orientation_as_of,
)

_seq = iter(range(1, 10**9))


def fact(
    day: date,
    etat: str = "2",
    sdd: bool | None = True,
    role: str = "DEM",
    *,
    present: bool = True,
    stock: bool = False,
    susp: date | None = None,
    closure: date | None = None,
    motif: str | None = None,
    reason: str | None = None,
    transfer_out: bool = False,
    death: date | None = None,
) -> FluxFact:
    n = next(_seq)
    return FluxFact(
        received_on=day,
        order=(day, n, 0),
        present=present,
        etat=etat if present else None,
        sdd=sdd if present else None,
        role=role,
        file_id=n,
        initial_stock=stock,
        suspension_since=susp,
        closure_date=closure,
        closure_motif=motif,
        absence_reason=reason,
        transfer_out=transfer_out,
        death_date=death,
    )


def ev(kind: str, day: date, **kw) -> Event:
    return Event(type=kind, on=day, key=f"{kind}-{day}", **kw)


def d(s: str) -> date:
    day, month, year = s.split("/")
    return date(int(year), int(month), int(day))


def run(facts, events=(), config=None):
    return compute_episodes(facts, events, config or RulesConfig())


# -- the seed's worked example ------------------------------------------------------------------


def test_seed_example_t0_is_the_reception_date_and_15_days_end_before_16_03():
    """ "si ouverture de droit et soumission aux droits et devoirs et pas de suivi en cours au 08/02 mais
    notification de la CAF au CD le 01/03 alors le T0 du département est le 01/03 et un nouvel entrant sera
    considéré orienté en moins de 15 jours si le courrier d'orientation a été envoyé avant le 16/03.\""""
    facts = [fact(d("01/03/2024"))]  # the right opened 08/02; the CD received the notification 01/03
    (ep,) = run(facts, [ev("orientation", d("15/03/2024"))]).episodes
    assert ep.t0 == d("01/03/2024")
    assert (ep.outcome, ep.delay_days, ep.within_15_days, ep.within_one_month) == ("oriente", 14, True, True)
    (late,) = run(facts, [ev("orientation", d("16/03/2024"))]).episodes
    assert (late.delay_days, late.within_15_days, late.within_one_month) == (15, False, True)


def test_one_month_fallback_window():
    """ "En cas d'impossibilité à paramétrer le délai de 15 jours, le délai d'un mois sera retenu." (T0 01/03:
    before 01/04.)"""
    facts = [fact(d("01/03/2024"))]
    assert run(facts, [ev("orientation", d("31/03/2024"))]).episodes[0].within_one_month is True
    assert run(facts, [ev("orientation", d("01/04/2024"))]).episodes[0].within_one_month is False
    (jan31,) = run([fact(d("31/01/2024"))], [ev("orientation", d("28/02/2024"))]).episodes
    assert jan31.within_one_month is True, "31/01 + one month is the end of February"


def test_the_delay_ends_with_a_referent_designation():
    """ "Fin du délai d'orientation : ... ou à la date lors de laquelle un référent est désigné pour le BRSA
    (à la suite d'une réunion collective ou d'un entretien d'orientation par exemple).\""""
    (ep,) = run([fact(d("04/03/2024"))], [ev("referent", d("11/03/2024"))]).episodes
    assert (ep.outcome, ep.oriented_by, ep.delay_days) == ("oriente", "referent", 7)


def test_the_earliest_orientation_on_or_after_t0_ends_the_delay():
    events = [ev("referent", d("20/03/2024")), ev("orientation", d("12/03/2024"))]
    (ep,) = run([fact(d("04/03/2024"))], events).episodes
    assert (ep.end_on, ep.oriented_by) == (d("12/03/2024"), "orientation")


# -- "Ce périmètre inclut" ----------------------------------------------------------------------


def test_included_first_time_demanders():
    """ "Les BRSA primo-demandeurs soumis aux droits et devoirs (1ère demande de RSA)\""""
    (ep,) = run([fact(d("05/03/2024"))]).episodes
    assert ep.outcome == "en_attente" and all(c.held for c in ep.criteria.values())


def test_included_radies_coming_back():
    """ "Les BRSA radiés qui reviennent dans le dispositif comme soumis à droits et devoirs, y compris ceux
    cumulant RSA et prime d'activité\""""
    facts = [
        fact(d("05/01/2023")),
        fact(d("10/06/2023"), etat="5", closure=d("31/05/2023"), motif="RFD"),
        fact(d("04/03/2024")),
    ]
    result = run(facts, [ev("orientation", d("10/01/2023"))])
    assert [e.t0 for e in result.episodes] == [d("05/01/2023"), d("04/03/2024")]
    assert "closed" in result.episodes[1].criteria["sans_suivi"].reason


def test_included_movers_into_the_departement():
    """ "Les BRSA soumis aux droits et devoirs qui viennent d'emménager sur le département\""""
    (ep,) = run([fact(d("06/03/2024"))]).episodes  # a transfer in: a new person for this département
    assert ep.t0 == d("06/03/2024")


def test_included_persons_joining_a_foyer_and_passing_under_500_euros():
    """ "Les personnes sans RSA qui rejoignent un foyer au RSA et sont ainsi soumis aux droits et devoirs et
    les personnes qui passent sous le seuil de 500€\""""
    joining = run([fact(d("07/03/2024"), role="CJT")]).episodes
    assert [e.t0 for e in joining] == [d("07/03/2024")]
    under = run([fact(d("01/01/2024"), sdd=False), fact(d("08/03/2024"), sdd=True)]).episodes
    assert [e.t0 for e in under] == [d("08/03/2024")]


def test_included_suspended_more_than_12_months():
    """ "Les BRSA suspendus depuis plus de 12 mois de nouveau soumis aux droits et devoirs.\""""
    facts = [
        fact(d("01/01/2023"), stock=True),
        fact(d("10/02/2023"), etat="4", susp=d("01/02/2023")),
        fact(d("04/03/2024")),
    ]
    result = run(facts)
    assert result.stock and [e.t0 for e in result.episodes] == [d("04/03/2024")]
    assert "suspension_longue" in result.episodes[0].criteria["sans_suivi"].reason


# -- "Ce périmètre exclut" ----------------------------------------------------------------------


def test_excluded_non_sdd_above_500_euros():
    """ "Les BRSA non-soumis aux droits et devoirs qui sont ou passent au-dessus du seuil des 500€ de revenus
    d'activité\""""
    assert run([fact(d("05/03/2024"), sdd=False)]).episodes == []
    assert len(run([fact(d("05/03/2024")), fact(d("06/05/2024"), sdd=False)]).episodes) == 1


def test_excluded_back_and_forth_with_a_dormant_follow_up():
    """ "Les BRSA qui effectuent des allers-retours réguliers dans le top « droits et devoirs » du fait de leurs
    revenus d'activité qui varient d'un mois sur l'autre et dont l'accompagnement est mis en veille mais
    non-clos\""""
    facts = [
        fact(d("05/01/2024")),
        fact(d("05/02/2024"), sdd=False),
        fact(d("05/03/2024")),
        fact(d("05/04/2024"), sdd=False),
        fact(d("06/05/2024")),
    ]
    result = run(facts, [ev("orientation", d("12/01/2024"))])
    assert [e.t0 for e in result.episodes] == [d("05/01/2024")]
    assert result.not_entries and "follow-up in progress" in result.not_entries[0].reason


def test_excluded_suspended_less_than_12_months():
    """ "Les BRSA suspendus depuis moins de 12 mois qui reviennent dans le dispositif des droits et devoirs ne
    font généralement pas partie des nouveaux entrants ... leur accompagnement est mis en veille.\""""
    facts = [
        fact(d("01/01/2024"), stock=True),
        fact(d("10/02/2024"), etat="4", susp=d("01/02/2024")),
        fact(d("04/06/2024")),
    ]
    assert run(facts).episodes == []


def test_stock_persons_are_not_nouveaux_entrants():
    result = run([fact(d("01/03/2024"), stock=True)])
    assert result.stock and result.episodes == []


# -- criterion 2: absent in M-1 ------------------------------------------------------------------


def test_present_in_droits_et_devoirs_at_the_end_of_the_previous_month_is_not_an_entry():
    """ "Lorsque le BRSA est ou est de nouveau soumis aux droits et devoirs (absent en M-1 des droits et
    devoirs)\" — a follow-up closed by the platform while the person stays in droits et devoirs."""
    facts = [fact(d("05/01/2024")), fact(d("06/03/2024"), role="DEM")]  # second fact: e.g. an address change
    events = [ev("orientation", d("10/01/2024")), ev("suivi_clos", d("15/02/2024"))]
    result = run(facts, events)
    assert [e.t0 for e in result.episodes] == [d("05/01/2024")]


def test_absent_in_m1_when_the_previous_month_ended_out_of_droits_et_devoirs():
    facts = [fact(d("05/01/2024")), fact(d("20/02/2024"), etat="5", closure=d("15/02/2024")), fact(d("04/03/2024"))]
    result = run(facts, [ev("orientation", d("10/01/2024"))])
    assert [e.t0 for e in result.episodes] == [d("05/01/2024"), d("04/03/2024")]


# -- end of an episode without orientation ------------------------------------------------------


def test_left_before_orientation_at_month_end():
    facts = [fact(d("05/03/2024")), fact(d("12/03/2024"), etat="4", susp=d("10/03/2024"))]
    (ep,) = run(facts).episodes
    assert (ep.outcome, ep.end_on, ep.left_on) == ("sorti_avant_orientation", d("31/03/2024"), d("12/03/2024"))


def test_leaving_and_coming_back_within_the_month_keeps_the_episode():
    facts = [fact(d("05/03/2024")), fact(d("12/03/2024"), sdd=False), fact(d("20/03/2024"))]
    (ep,) = run(facts, [ev("orientation", d("25/03/2024"))]).episodes
    assert (ep.t0, ep.outcome) == (d("05/03/2024"), "oriente")


def test_an_orientation_just_before_t0_belongs_to_the_entry():
    """docs/rules.md, "Settled in issue #22": an orientation dated before T0 but after the person's last file
    (here none) and not before the first day of the previous month orients the episode at T0 (it removed it)."""
    (ep,) = run([fact(d("05/03/2024"))], [ev("orientation", d("01/03/2024"))]).episodes
    assert (ep.outcome, ep.end_on, ep.delay_days, ep.orientation.on) == ("oriente", d("05/03/2024"), 0, d("01/03/2024"))


def test_as_of_sees_only_what_was_dated_by_then():
    (ep,) = run([fact(d("05/03/2024"))], [ev("orientation", d("25/03/2024"))]).episodes
    assert outcome_as_of(ep, d("20/03/2024")) == "en_attente"
    assert outcome_as_of(ep, d("25/03/2024")) == "oriente"


def test_rdv_invitation_and_contract_are_attached():
    events = [
        ev("invitation", d("06/03/2024")),
        ev("rdv_orientation", d("12/03/2024"), presence="absent"),
        ev("orientation", d("14/03/2024")),
        ev("contrat", d("02/04/2024"), contrat="CER"),
    ]
    (ep,) = run([fact(d("05/03/2024"))], events).episodes
    assert (ep.invitation_on, ep.rdv_orientation_on, ep.rdv_orientation_missed_on) == (
        d("06/03/2024"),
        d("12/03/2024"),
        d("12/03/2024"),
    )
    assert ep.contrats == [(d("02/04/2024"), "CER")]


# -- the orientation RDV's absents (001 ~7508; SPEC §3, third round) ---------------------------------------


def _rdv(*presences, t0="05/03/2024"):
    """An episode entered on t0, oriented on 14/03, with orientation RDV (day, presence) in that order."""
    events = [ev("rdv_orientation", d(day), presence=p) for day, p in presences]
    (ep,) = run([fact(d(t0))], [*events, ev("orientation", d("14/03/2024"))]).episodes
    return ep


def _as_of(ep, day):
    return rdv_orientation_as_of(
        ep.rdv_orientation_missed_on, ep.rdv_orientation_seen_on, ep.rdv_orientation_excused_on, d(day)
    )


def test_a_missed_orientation_rdv_counts_even_when_the_next_one_was_attended():
    """ "Préciser également le nombre de BRSA qui sont orientés mais qui ne se présentent pas au
    rendez-vous d'orientation si vous le souhaitez." SPEC §3: counted when at least one orientation RDV of
    the episode was missed; those never seen at a later one are given too."""
    ep = _rdv(("08/03/2024", "absent"), ("12/03/2024", "present"))
    assert (ep.rdv_orientation_missed_on, ep.rdv_orientation_seen_on) == (d("08/03/2024"), d("12/03/2024"))
    assert _as_of(ep, "31/03/2024") == RdvOrientation(missed=True, never_seen=False, excused=False)
    # as of a day before the second RDV, the person was never seen again
    assert _as_of(ep, "10/03/2024") == RdvOrientation(missed=True, never_seen=True, excused=False)
    assert _as_of(ep, "07/03/2024") == RdvOrientation(missed=False, never_seen=False, excused=False)


def test_absent_only_is_absent_and_never_seen_and_a_presence_before_the_miss_does_not_count():
    assert _as_of(_rdv(("08/03/2024", "absent")), "31/03/2024") == RdvOrientation(True, True, False)
    ep = _rdv(("06/03/2024", "present"), ("08/03/2024", "absent"), ("09/03/2024", "prevu"))
    assert (ep.rdv_orientation_missed_on, ep.rdv_orientation_seen_on) == (d("08/03/2024"), None)
    assert _as_of(ep, "31/03/2024") == RdvOrientation(True, True, False)


def test_present_the_same_day_as_the_miss_is_seen_whatever_the_events_order():
    for order in ((("08/03/2024", "absent"), ("08/03/2024", "present")),
                  (("08/03/2024", "present"), ("08/03/2024", "absent"))):  # fmt: skip
        events = [Event("rdv_orientation", d(day), key=f"k{n}", presence=p) for n, (day, p) in enumerate(order)]
        (ep,) = run([fact(d("05/03/2024"))], events).episodes
        assert (ep.rdv_orientation_missed_on, ep.rdv_orientation_seen_on) == (d("08/03/2024"), d("08/03/2024"))


def test_the_excused_are_apart_and_cancelled_or_planned_rdv_never_count():
    ep = _rdv(("08/03/2024", "excuse"))
    assert _as_of(ep, "31/03/2024") == RdvOrientation(missed=False, never_seen=False, excused=True)
    ep = _rdv(("07/03/2024", "annule"), ("08/03/2024", "prevu"), ("09/03/2024", None))
    assert ep.rdv_orientation_on == d("08/03/2024"), "a cancelled RDV is no RDV; a planned one is dated"
    assert _as_of(ep, "31/03/2024") == RdvOrientation(False, False, False)


# -- the pilotage file's path facts (001, Annexe 4 of the data-access convention) ---------------------------


def test_the_first_accompaniment_rdv_is_the_first_held():
    """ "DATE_1ER_RDV_ACCOMPAGNEMENT date du 1er rdv d'accompagnement": an RDV cancelled, missed, excused or
    only planned did not take place; one given without presence did."""
    events = [
        ev("orientation", d("10/03/2024")),
        *(ev("rdv_accompagnement", d(f"{day}/03/2024"), presence=p)
          for day, p in (("11", "annule"), ("12", "absent"), ("13", "excuse"), ("14", "prevu"), ("20", "present"))),
    ]  # fmt: skip
    (ep,) = run([fact(d("05/03/2024"))], events).episodes
    assert ep.first_rdv_accompagnement_on == d("20/03/2024")
    (ep,) = run([fact(d("05/03/2024"))], [ev("rdv_accompagnement", d("18/03/2024"))]).episodes
    assert ep.first_rdv_accompagnement_on == d("18/03/2024")


def test_date_cer_is_the_latest_cer_and_type_contrat_the_latest_contract_as_of():
    """ "DATE_CER date de signature du CER (et non du PPAE)"; "TYPE_CONTRAT différenciation CER ou PPAE"."""
    events = [ev("orientation", d("10/03/2024")), ev("contrat", d("20/03/2024"), contrat="PPAE"),
              ev("contrat", d("02/05/2024"), contrat="CER"), ev("contrat", d("02/11/2024"), contrat="CER")]  # fmt: skip
    (ep,) = run([fact(d("05/03/2024"))], events).episodes
    assert [kind for _on, kind in ep.contrats] == ["PPAE", "CER", "CER"]
    assert (last_contract_as_of(ep.contrats, d("30/04/2024")), last_cer_as_of(ep.contrats, d("30/04/2024"))) == (
        (d("20/03/2024"), "PPAE"),
        None,
    )
    assert last_contract_as_of(ep.contrats, d("31/05/2024")) == (d("02/05/2024"), "CER")
    assert last_cer_as_of(ep.contrats, d("31/12/2024")) == d("02/11/2024")
    stored = [[on.isoformat(), kind] for on, kind in ep.contrats]  # as entry_episodes keeps them (JSON)
    assert last_cer_as_of(stored, d("31/05/2024")) == d("02/05/2024")


def test_a_referent_designated_after_the_orientation_is_kept_with_its_date():
    """ "STRUCTURE_REFERENTE structure référente de l'accompagnement": the latest référent's."""
    events = [
        ev("orientation", d("10/03/2024"), structure="Maison des solidarités"),
        ev("referent", d("02/04/2024"), structure="CCAS de Verdun"),
        ev("referent", d("02/06/2024"), organisme="FRANCE_TRAVAIL"),
    ]
    (ep,) = run([fact(d("05/03/2024"))], events).episodes
    assert ep.orientation is not None and ep.orientation.structure == "Maison des solidarités"
    assert ep.referents == [(d("02/04/2024"), "CCAS de Verdun"), (d("02/06/2024"), "FRANCE_TRAVAIL")]
    assert latest_as_of(ep.referents, d("01/04/2024")) is None
    assert latest_as_of(ep.referents, d("30/04/2024")) == (d("02/04/2024"), "CCAS de Verdun")
    (by_referent,) = run([fact(d("05/03/2024"))], [ev("referent", d("11/03/2024"), structure="CCAS")]).episodes
    assert by_referent.referents == [], "the référent that orients is the orientation"


def test_events_of_one_day_are_ordered_by_their_content_not_by_their_arrival():
    """Two contracts or two référents of one day, without external id (their key is our id, given on arrival):
    whichever arrived first, the latest contract and référent are the same (SPEC §3: episodes depend only on
    dated facts, never on the order in which they reached the service)."""
    day = d("02/05/2024")

    def episode(keys):
        events = [
            ev("orientation", d("10/03/2024")),
            Event(type="contrat", on=day, key=keys[0], contrat="PPAE"),
            Event(type="contrat", on=day, key=keys[1], contrat="CER"),
            Event(type="referent", on=day, key=keys[2], structure="CCAS de Verdun"),
            Event(type="referent", on=day, key=keys[3], structure="Maison des solidarités"),
        ]
        (ep,) = run([fact(d("05/03/2024"))], events).episodes
        return ep.contrats, ep.referents

    assert episode(["1", "2", "3", "4"]) == episode(["4", "3", "2", "1"])


def test_what_counts_as_versable_is_configurable():
    facts = [fact(d("05/03/2024"), etat="3")]
    assert run(facts).episodes == []
    assert len(run(facts, config=RulesConfig(versable_etats=frozenset({"2", "3"}))).episodes) == 1


# -- order independence --------------------------------------------------------------------------


@st.composite
def histories(draw):
    rng = random.Random(draw(st.integers(0, 10**6)))
    day = date(2023, 1, 2)
    facts, events = [], []
    for _ in range(draw(st.integers(1, 12))):
        day += timedelta(days=rng.randint(1, 70))
        etat = rng.choice(["2", "2", "2", "3", "4", "5"])
        facts.append(
            fact(
                day,
                etat=etat,
                sdd=rng.random() < 0.8,
                stock=not facts and rng.random() < 0.3,
                susp=day - timedelta(days=rng.randint(0, 500)) if etat == "4" else None,
                closure=day if etat == "5" else None,
                present=rng.random() < 0.9,
                reason=rng.choice(["left_foyer", "absent_full_file"]),
            )
        )
        if rng.random() < 0.4:
            kind = rng.choice(["orientation", "referent", "rdv_orientation", "suivi_clos", "invitation"])
            events.append(ev(kind, day + timedelta(days=rng.randint(-20, 40)), presence="absent"))
    return facts, events


@settings(max_examples=200, deadline=None)
@given(histories(), st.randoms())
def test_results_do_not_depend_on_the_order_facts_arrived_in(history, rnd):
    facts, events = history
    expected = run(facts, events)
    shuffled_facts, shuffled_events = facts[:], events[:]
    rnd.shuffle(shuffled_facts)
    rnd.shuffle(shuffled_events)
    assert run(shuffled_facts, shuffled_events) == expected


def test_the_stock_state_stands_for_the_month_before_it():
    """SPEC §3, "Readings settled where the seed is terse": "the stock's state stands for the months before
    it". A stock person radiated the day after the stock and back three weeks later, in the stock's month,
    was in droits et devoirs at the end of the previous month: not a nouvel entrant (it was, M-1 `unknown`)."""
    facts = [
        fact(d("05/03/2024"), stock=True),
        fact(d("06/03/2024"), etat="5", closure=d("06/03/2024"), motif="RFD"),
        fact(d("27/03/2024")),
    ]
    result = run(facts)
    assert result.episodes == []
    (decision,) = [x for x in result.not_entries if x.on == d("27/03/2024")]
    assert "already in droits et devoirs at the end of the previous month" in decision.reason
    # the next month, a new radiation and return is judged on the state of that month's end, as before
    later = run([*facts, fact(d("02/04/2024"), etat="5", closure=d("02/04/2024"), motif="RFD"), fact(d("03/05/2024"))])
    assert [e.t0 for e in later.episodes] == [d("03/05/2024")]


def test_a_follow_up_is_never_closed_before_it_opened():
    """SPEC §3: a suspension longer than 12 months closes any follow-up, "even one opened during the
    suspension"; its explanation dates that closure no earlier than the opening (it said "closed on
    2023-07-02" for a follow-up opened on 2023-08-22)."""
    facts = [
        fact(d("10/07/2022"), etat="4", susp=d("02/07/2022")),
        fact(d("15/09/2023")),
    ]
    # (a référent dated from 01/08/2023 would belong to the entry of 15/09/2023: "Settled in issue #22")
    result = run(facts, [ev("referent", d("22/07/2023"), structure="CCAS")])
    (episode,) = result.episodes
    reason = episode.criteria["sans_suivi"].reason
    assert reason == "follow-up closed on 2023-07-22 (suspension_longue)"


@pytest.mark.parametrize("etat", ["0", "1", "2", "3", "4", "5", "6", None])
@pytest.mark.parametrize("sdd", [True, False, None])
@pytest.mark.parametrize("stock_is_followed", [True, False])
def test_a_person_whose_only_fact_is_the_stock_has_no_episode(etat, sdd, stock_is_followed):
    """What the ingestion relies on to skip recomputing the persons an initial stock creates
    (STOCK_ALONE_OPENS_NOTHING): one stock state, whatever it is, opens no entry episode."""
    from app.rules.episodes import STOCK_ALONE_OPENS_NOTHING

    assert STOCK_ALONE_OPENS_NOTHING
    config = RulesConfig(stock_is_followed=stock_is_followed)
    result = run([fact(d("01/03/2024"), etat=etat, sdd=sdd, stock=True)], config=config)
    assert result.episodes == [] and result.stock


def test_a_date_of_death_ends_the_episode_and_closes_the_follow_up():
    """VRSD0301's DTDC (shared/formats/caf-flux.md): the date of death closes any follow-up and ends any
    entry episode, the day the file says so, not at the next month end; and nobody becomes a nouvel
    entrant again from a record that carries it."""
    facts = [fact(d("02/01/2024"), sdd=False), fact(d("08/01/2024")), fact(d("12/01/2024"), death=d("10/01/2024"))]
    (ep,) = run(facts).episodes
    assert (ep.outcome, ep.end_on, ep.left_on) == ("sorti_avant_orientation", d("12/01/2024"), d("12/01/2024"))
    followed = run(
        [fact(d("02/01/2024")), fact(d("12/02/2024"), death=d("10/02/2024"))], [ev("orientation", d("05/01/2024"))]
    )
    assert followed.followed is False
    assert run([fact(d("02/01/2024"), sdd=False), fact(d("12/02/2024"), death=d("10/02/2024"))]).episodes == []


# -- settled in issue #22 ------------------------------------------------------------------------


def test_a_stock_person_suspended_less_than_12_months_who_comes_back_is_not_an_entry():
    """ "Les BRSA suspendus depuis moins de 12 mois qui reviennent dans le dispositif des droits et devoirs ne
    font généralement pas partie des nouveaux entrants ... ces BRSA reprennent l'accompagnement avec le
    référent qui leur avait été désigné." The stock shows the right suspended: their follow-up is dormant,
    the suspension counted from the stock's date when the flux gives no start date (they were entries)."""
    stock = fact(d("15/01/2024"), etat="4", stock=True)
    result = run([stock, fact(d("16/12/2024"))])  # 11 months later
    assert result.episodes == [] and result.followed
    (decision,) = result.not_entries
    assert "follow-up in progress since 2024-01-15 (stock)" in decision.reason
    # "plus de 12 mois" is strict: back exactly 12 months after the stock is not an entry either
    assert run([stock, fact(d("15/01/2025"))]).episodes == []
    (ep,) = run([stock, fact(d("17/02/2025"))]).episodes  # 13 months later
    assert ep.t0 == d("17/02/2025")
    assert ep.criteria["sans_suivi"].reason == "follow-up closed on 2025-01-15 (suspension_longue)"


def test_a_stock_suspension_counts_from_the_flux_start_date():
    """The suspension began before the stock (the flux's start date): 12 months from that date, not from the
    stock's."""
    stock = fact(d("15/01/2024"), etat="3", susp=d("01/02/2023"), stock=True)
    (ep,) = run([stock, fact(d("04/03/2024"))]).episodes
    assert ep.criteria["sans_suivi"].reason == "follow-up closed on 2024-02-01 (suspension_longue)"
    assert (
        run([fact(d("15/01/2024"), etat="3", susp=d("01/12/2023"), stock=True), fact(d("04/03/2024"))]).episodes == []
    )


def test_a_stock_person_suspended_out_of_droits_et_devoirs_is_not_followed():
    """The stock's follow-up is for persons in droits et devoirs but for the suspension (SDD, DEM or CJT): one
    not soumis aux droits et devoirs who becomes so is an entry, as "les personnes qui passent sous le seuil
    de 500€"."""
    result = run([fact(d("15/01/2024"), etat="4", sdd=False, stock=True), fact(d("04/03/2024"))])
    assert [e.t0 for e in result.episodes] == [d("04/03/2024")]


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"sdd": False}, "non_soumis_droits_devoirs"),
        ({"etat": "4", "susp": d("10/03/2024")}, "droit_suspendu"),
        ({"etat": "1"}, "droit_non_versable"),
        ({"etat": "5", "closure": d("10/03/2024"), "motif": "RFD"}, "droit_clos"),
        ({"etat": "5", "closure": d("10/03/2024"), "motif": "MUT"}, "demenagement"),
        ({"transfer_out": True, "sdd": None}, "demenagement"),
        ({"present": False, "reason": "left_foyer"}, "sorti_du_foyer"),
        ({"present": False, "reason": "absent_full_file"}, "absent_fichier_complet"),
        ({"role": "ENF"}, "role_hors_droits_devoirs"),
        ({"death": d("10/03/2024")}, "deces"),
    ],
)
def test_an_episode_says_why_the_person_left_and_which_file_showed_it(kw, reason):
    """The explanation of an episode left before orientation gives the date the person left (`left_on`), why
    (`left_reason`) and the file that showed it (`left_file_id`)."""
    leaving = fact(d("12/03/2024"), **kw)
    (ep,) = run([fact(d("05/03/2024")), leaving]).episodes
    assert ep.outcome == "sorti_avant_orientation"
    assert (ep.left_on, ep.left_reason, ep.left_file_id) == (d("12/03/2024"), reason, leaving.file_id)


def test_the_reason_is_the_first_fact_out_and_is_cleared_on_coming_back():
    out_1, out_2 = fact(d("12/03/2024"), sdd=False), fact(d("20/03/2024"), etat="5", closure=d("20/03/2024"))
    (ep,) = run([fact(d("05/03/2024")), out_1, out_2]).episodes
    assert (ep.end_on, ep.left_on, ep.left_reason, ep.left_file_id) == (
        d("31/03/2024"),
        d("12/03/2024"),
        "non_soumis_droits_devoirs",
        out_1.file_id,
    )
    back = run([fact(d("05/03/2024")), out_1, fact(d("20/03/2024"))]).episodes[0]
    assert (back.outcome, back.left_on, back.left_reason, back.left_file_id) == ("en_attente", None, None, None)


def test_a_conjoint_missing_from_the_foyer_has_left_it_that_day():
    """SPEC §3, third round: "a member missing from their foyer in a daily file that lists the foyer's members
    has left the foyer on that file's date" (app/flux/apply.py stores that absence, `left_foyer`). The episode
    ends at the month end, the person having left on that date, and the follow-up is closed: back in another
    foyer, they are a nouvel entrant again ("les personnes sans RSA qui rejoignent un foyer au RSA")."""
    gone = fact(d("12/03/2024"), role="CJT", present=False, reason="left_foyer")
    facts = [fact(d("05/02/2024"), role="CJT"), gone, fact(d("06/05/2024"), role="DEM")]
    result = run(facts, [ev("orientation", d("12/02/2024"))])
    first, second = result.episodes
    assert (first.outcome, second.t0) == ("oriente", d("06/05/2024"))
    assert second.criteria["sans_suivi"].reason == "follow-up closed on 2024-03-12 (sorti_du_foyer)"
    unoriented = run([fact(d("05/03/2024"), role="CJT"), gone]).episodes[0]
    assert (unoriented.end_on, unoriented.left_on, unoriented.left_reason) == (
        d("31/03/2024"),
        d("12/03/2024"),
        "sorti_du_foyer",
    )


def test_the_seed_example_with_an_orientation_before_the_notification():
    """ "si ouverture de droit et soumission aux droits et devoirs et pas de suivi en cours au 08/02 mais
    notification de la CAF au CD le 01/03 alors le T0 du département est le 01/03": the Département, told by
    the instruction flux, oriented the person on 20/02, before the CAF's notification. That orientation
    belongs to this entry: it is no follow-up in progress (the person was not removed from the nouveaux
    entrants, it did), and it ends the delay at T0, 0 days, its own date kept."""
    (ep,) = run([fact(d("01/03/2024"))], [ev("orientation", d("20/02/2024"), organisme="DEPARTEMENT")]).episodes
    assert (ep.t0, ep.outcome, ep.end_on, ep.delay_days) == (d("01/03/2024"), "oriente", d("01/03/2024"), 0)
    assert (ep.within_15_days, ep.within_one_month, ep.oriented_by) == (True, True, "orientation")
    assert ep.orientation.on == d("20/02/2024") and ep.orientation.organisme == "DEPARTEMENT"
    assert "belongs to this entry" in ep.criteria["sans_suivi"].reason
    assert outcome_as_of(ep, d("01/03/2024")) == "oriente"
    # a référent counts the same; from the first day of the month before T0's month
    (ref,) = run([fact(d("01/03/2024"))], [ev("referent", d("01/02/2024"))]).episodes
    assert (ref.oriented_by, ref.delay_days) == ("referent", 0)


def test_an_older_orientation_is_still_a_follow_up_in_progress():
    """Dated before the first day of the previous month, or before the person's last file before T0, or of a
    previous spell not closed: a follow-up in progress (criterion 3 fails), as before."""
    assert run([fact(d("01/03/2024"))], [ev("orientation", d("31/01/2024"))]).episodes == []
    demand = fact(d("15/02/2024"), etat="0")  # the demand, awaiting the Département's decision
    assert run([demand, fact(d("01/03/2024"))], [ev("orientation", d("10/02/2024"))]).episodes == []
    # after the last file: it belongs to the entry (a file of the same day comes before the day's events)
    (ep,) = run([demand, fact(d("01/03/2024"))], [ev("orientation", d("15/02/2024"))]).episodes
    assert (ep.end_on, ep.delay_days) == (d("01/03/2024"), 0)
    # a previous spell's follow-up, dormant (out of SDD), is in progress whatever the new orientation
    spell = [fact(d("05/01/2024")), fact(d("05/02/2024"), sdd=False), fact(d("01/03/2024"))]
    result = run(spell, [ev("orientation", d("12/01/2024")), ev("orientation", d("20/02/2024"))])
    assert [e.t0 for e in result.episodes] == [d("05/01/2024")]
    assert "follow-up in progress since" in result.not_entries[-1].reason
    # closed (radiation): the new orientation belongs to the new entry
    radie = [fact(d("05/01/2023")), fact(d("10/06/2023"), etat="5", closure=d("31/05/2023")), fact(d("01/03/2024"))]
    result = run(radie, [ev("orientation", d("12/01/2023")), ev("referent", d("20/02/2024"))])
    assert [(e.t0, e.end_on, e.oriented_by) for e in result.episodes] == [
        (d("05/01/2023"), d("12/01/2023"), "orientation"),
        (d("01/03/2024"), d("01/03/2024"), "referent"),
    ]


def test_an_early_orientation_without_an_entry_is_a_follow_up_from_its_own_date():
    """No entry at the next file (already in droits et devoirs at the end of the previous month): the
    orientation is a follow-up opened on its own date, as any."""
    facts = [fact(d("05/01/2024")), fact(d("10/02/2024"), sdd=False), fact(d("20/02/2024"))]
    result = run(
        facts, [ev("orientation", d("08/01/2024")), ev("suivi_clos", d("01/02/2024")), ev("referent", d("15/02/2024"))]
    )
    assert [e.t0 for e in result.episodes] == [d("05/01/2024")]
    assert result.followed
    assert "follow-up in progress since 2024-02-15 (referent)" in result.not_entries[-1].reason


# -- an orientation before T0 that belongs to the entry: what else happened before T0 (issue #22 review) --


def test_an_early_orientation_the_platform_closed_before_t0_does_not_belong_to_the_entry():
    """Oriented on 15/10, the follow-up closed by the platform on 20/10 (`suivi_clos`), T0 on 10/11: the
    closed orientation no longer holds, so it neither orients the entry nor keeps a follow-up open; back on
    10/03 after leaving, the person is a nouvel entrant again (the closure is never lost)."""
    facts = [fact(d("01/09/2023"), sdd=False), fact(d("10/11/2023")), fact(d("10/01/2024"), sdd=False),
             fact(d("10/03/2024"))]  # fmt: skip
    events = [ev("orientation", d("15/10/2023")), ev("suivi_clos", d("20/10/2023"))]
    result = run(facts, events)
    assert [(ep.t0, ep.outcome) for ep in result.episodes] == [
        (d("10/11/2023"), "sorti_avant_orientation"),
        (d("10/03/2024"), "en_attente"),
    ]


def test_a_referent_designated_between_an_early_orientation_and_t0_is_the_episodes():
    """Oriented on 15/10 (structure ORIENT), a référent designated on 05/11 (REF), T0 on 10/11: the
    orientation belongs to the entry and the référent, designated after it, is the episode's
    (STRUCTURE_REFERENTE then says REF, docs/exports.md)."""
    facts = [fact(d("01/09/2023"), sdd=False), fact(d("10/11/2023"))]
    events = [ev("orientation", d("15/10/2023"), structure="ORIENT"), ev("referent", d("05/11/2023"), structure="REF")]
    (ep,) = run(facts, events).episodes
    assert (ep.outcome, ep.delay_days, ep.orientation.structure) == ("oriente", 0, "ORIENT")
    assert ep.referents == [(d("05/11/2023"), "REF")]


def test_a_referent_is_attached_once_when_no_early_orientation_applies():
    """An earlier spell's référent (01/08) is taken once, even when the walk first tried the fact of 10/11
    with an orientation of 15/10 that turned out not to belong to an entry."""
    facts = [fact(d("10/01/2023")), fact(d("10/06/2023"), sdd=False), fact(d("10/11/2023"))]
    events = [ev("orientation", d("20/01/2023")), ev("referent", d("01/08/2023"), structure="S1"),
              ev("orientation", d("15/10/2023"))]  # fmt: skip
    (first, *_) = run(facts, events).episodes
    assert first.referents == [(d("01/08/2023"), "S1")]
