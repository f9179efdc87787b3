"""Entry episodes of one person, computed from dated facts only (annex 4 emploi, §4.1-4.2; SPEC §3-4).

Input: the person's flux facts (each dated by the day the Département *received* the file) and the
orientation-side events (each dated by its own date). Output: the entry episodes, each with its T0, the
three criteria and the facts that decided them, and its outcome. The order in which facts reached the
service plays no part: facts are sorted by their dates (ties by properties of the facts themselves).
"""

from __future__ import annotations

import calendar
import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Protocol

from app.rules.config import DEFAULT, DROIT_CLOS, DROIT_OUVERT, RulesConfig

ORIENTING_EVENTS = ("orientation", "referent")
CONTRAT_ENGAGEMENT, CE = "contrat_engagement", "CE"  # the event type, and its kind in `Episode.contrats`
# Since 1 January 2025 the contrat d'engagement replaces the CER and the PPAE (loi n° 2023-1196, docs/rules.md)
CE_IN_FORCE = date(2025, 1, 1)
FOLLOW_UP_EVENTS = (*ORIENTING_EVENTS, "suivi_clos")  # what opens or closes a follow-up
SUSPENDED = ("3", "4")  # ETATDOSRSA: open and suspended, payment suspended
WAITING = "en_attente"
ORIENTED = "oriente"
LEFT_BEFORE = "sorti_avant_orientation"
# The outcomes that end a wait. An episode has an `end_on` exactly when its outcome is one of these (set
# together by `_orient` and `_Walk._check_exit` / `_close_suivi`); stored episodes keep that pairing.
DECISIONS = (ORIENTED, LEFT_BEFORE)
# The legal clock of CASF art. D.262-65-2 (décret n° 2024-1244): what the T0 file told the Département.
OUVERTURE_DROIT = "ouverture_droit"
TRANSFERT_DROIT = "transfert_droit"
LEGAL_CLOCKS = (OUVERTURE_DROIT, TRANSFERT_DROIT)
# Why a person stopped meeting criterion 1 or 2, read from the fact dated `left_on` (the first reason that
# applies, in this order). A suspension longer than 12 months is no reason of its own here: the suspension
# ends the episode at the first month end (`droit_suspendu`); it is what closes a follow-up (criterion 3).
LEFT_REASONS = {
    "deces": "a date of death (DTDC)",
    "sorti_du_foyer": "left the foyer (missing from a daily file that lists the foyer's members)",
    "absent_fichier_complet": "absent from a full file of the organisme that carried them (radiation)",
    "demenagement": "moved out of the département (closure MUT, or a transfer to another organisme)",
    "droit_clos": "right closed (ETATDOSRSA 5 or 6, or a closure date)",
    "droit_suspendu": "right suspended (ETATDOSRSA 3 or 4, not versable)",
    "droit_non_versable": "right not versable (another ETATDOSRSA)",
    "non_soumis_droits_devoirs": "no longer soumis aux droits et devoirs (TOPPERSDRODEVORSA)",
    "role_hors_droits_devoirs": "a role not subject to droits et devoirs (not DEM, CJT or BEN)",
}


@dataclass(frozen=True)
class FluxFact:
    """What one received file said about the person (a stored person state)."""

    received_on: date
    order: tuple[Any, ...]  # tie-break on the same reception date (app.persons.order): (created at, kind, id, seq)
    present: bool
    etat: str | None
    sdd: bool | None
    role: str | None
    file_id: int | None = None
    initial_stock: bool = False
    suspension_since: date | None = None
    suspension_motifs: tuple[str, ...] = ()
    closure_date: date | None = None
    closure_motif: str | None = None
    transfer_out: bool = False
    absence_reason: str | None = None
    fonorg: str | None = None
    death_date: date | None = None  # DTDC: the person died (VRSD0301)
    # OrganismeCedant: the dossier was transferred in (DDARRMUT, the arrival date, and the organisme it came
    # from); NUMDEMRSA. What the legal clock reads (`_Timeline._legal_clock`).
    transfer_in_on: date | None = None
    transfer_in_from: str | None = None
    numdemrsa: str | None = None


@dataclass(frozen=True)
class Event:
    """An orientation-side event (already stripped of superseded ones)."""

    type: str
    on: date
    key: str  # a stable tie-break among events of the same date (external id or id)
    organisme: str | None = None
    type_parcours: str | None = None
    accompagnement_global: bool | None = None
    structure: str | None = None
    presence: str | None = None
    contrat: str | None = None
    event_id: int | None = None
    # France Travail's own orientation (read by ft sync from lectureOrientation): a DECIDE one with a parcours
    # comes as type "orientation" and orients like any (`oriented_by = "france_travail"`); the others (a
    # PRECONISE, a decision without a parcours) come as type `FT_NOT_ORIENTING`: shown, never orienting
    by_france_travail: bool = False


# A France Travail orientation that does not orient (a PRECONISE, or a DECIDE without a parcours): attached to
# its episode for display, never ending one nor opening a follow-up.
FT_NOT_ORIENTING = "preconisation_ft"
ORIENTED_BY_FRANCE_TRAVAIL = "france_travail"


@dataclass
class Criterion:
    held: bool
    reason: str
    facts: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Episode:
    t0: date
    t0_file_id: int | None
    criteria: dict[str, Criterion]
    outcome: str = WAITING  # en_attente | oriente | sorti_avant_orientation
    end_on: date | None = None
    oriented_by: str | None = None  # orientation | referent | france_travail (an orientation France Travail decided)
    orientation: Event | None = None
    delay_days: int | None = None
    within_15_days: bool | None = None
    within_one_month: bool | None = None
    left_on: date | None = None  # when the person stopped meeting criterion 1 or 2 (the fact's date)
    left_reason: str | None = None  # why, from that fact (one of LEFT_REASONS)
    left_file_id: int | None = None  # the file that showed it (received on left_on)
    invitation_on: date | None = None
    rdv_orientation_on: date | None = None  # the first orientation RDV not cancelled (planned or held)
    # The orientation RDV's presences (`_attach`), as dates so that any as-of reading is exact
    # (`rdv_orientation_as_of`): the first missed (`absent`), the first seen (`present`) on or after that day,
    # the first excused (`excuse`).
    rdv_orientation_missed_on: date | None = None
    rdv_orientation_seen_on: date | None = None
    rdv_orientation_excused_on: date | None = None
    first_rdv_accompagnement_on: date | None = None  # the first accompaniment RDV held (`HELD`)
    contrats: list[tuple[date, str | None]] = field(default_factory=list)  # every contract, by date
    # every contrat d'engagement (also in `contrats` as (date, "CE")), by date, with its organisme
    contrats_engagement: list[tuple[date, str | None]] = field(default_factory=list)
    # the orientation that ended the episode (dated `end_on`) and every re-orientation after it, by date, with
    # its type_parcours: the contract's one-month clock starts again at each (`contract_deadline_as_of`)
    orientations: list[tuple[date, str | None]] = field(default_factory=list)
    # the référents designated after the orientation, by date, with their structure (else their organisme)
    referents: list[tuple[date, str | None]] = field(default_factory=list)
    _rdv_present_on: date | None = field(default=None, repr=False, compare=False)  # the latest `present`
    # The legal deadline of CASF art. D.262-65-2 (décret n° 2024-1244; docs/rules.md, "The legal deadline"):
    # `legal_clock` is OUVERTURE_DROIT or TRANSFERT_DROIT when the T0 file brought the information on the
    # opening or the transfer of the right, else None; `legal_clock_reason` says why either way;
    # `legal_deadline` = the reception of the file that brought it + 42 days (T0's, or an opening received before T0
    # while the person was not yet in droits et devoirs): the first day France Travail may orient (None: no clock).
    legal_clock: str | None = None
    legal_clock_reason: str | None = None
    legal_deadline: date | None = None


@dataclass
class Decision:
    """A point where the person entered droits et devoirs without becoming a nouvel entrant, and why."""

    on: date
    file_id: int | None
    reason: str


@dataclass
class PersonEpisodes:
    episodes: list[Episode]
    not_entries: list[Decision]
    stock: bool
    followed: bool  # a follow-up is open (or dormant) after the last fact


def add_months(day: date, months: int) -> date:
    month = day.month - 1 + months
    year = day.year + month // 12
    month = month % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def legal_deadline_from(received_on: date, config: RulesConfig = DEFAULT) -> date:
    """THE legal deadline of CASF art. D.262-65-2 (read through `app.rules.deadlines.legal_deadline`): the
    reception day + 42 days, the first day France Travail may orient."""
    return received_on + timedelta(days=config.legal_deadline_days)


def month_end(day: date) -> date:
    return date(day.year, day.month, calendar.monthrange(day.year, day.month)[1])


def previous_month_end(day: date) -> date:
    return day.replace(day=1) - timedelta(days=1)


def is_versable(fact: FluxFact | None, config: RulesConfig) -> bool:
    if fact is None or not fact.present or fact.etat is None:
        return False
    if fact.etat in config.versable_etats:
        return True
    motifs = config.versable_with_motifs.get(fact.etat)
    return motifs is not None and bool(set(fact.suspension_motifs) & motifs)


def in_droits_devoirs(fact: FluxFact | None, config: RulesConfig) -> bool:
    """Criteria 1 and 2 now: a versable right and soumis aux droits et devoirs (DEM/CJT)."""
    return (
        fact is not None
        and fact.present
        and fact.death_date is None
        and is_versable(fact, config)
        and fact.sdd is True
        and (fact.role in config.brsa_roles)
    )


def _right_open(fact: FluxFact | None) -> bool:
    """The file showed the person with the foyer's right open (ETATDOSRSA 2, 3 or 4), whatever else."""
    return fact is not None and fact.present and fact.etat in DROIT_OUVERT


def left_reason(fact: FluxFact, config: RulesConfig) -> str:
    """Why this fact shows the person out of droits et devoirs (a key of LEFT_REASONS)."""
    if fact.death_date is not None:
        return "deces"
    if not fact.present:
        return "sorti_du_foyer" if fact.absence_reason == "left_foyer" else "absent_fichier_complet"
    if fact.transfer_out or (fact.closure_motif == "MUT" and (fact.etat in DROIT_CLOS or fact.closure_date)):
        return "demenagement"
    if fact.etat in DROIT_CLOS or fact.closure_date is not None:
        return "droit_clos"
    if not is_versable(fact, config):
        return "droit_suspendu" if fact.etat in SUSPENDED else "droit_non_versable"
    if fact.sdd is not True:
        return "non_soumis_droits_devoirs"
    return "role_hors_droits_devoirs"


def _fact_ref(fact: FluxFact | None) -> dict[str, Any]:
    if fact is None:
        return {"state": "unknown"}
    return {
        "received_on": fact.received_on.isoformat(),
        "file_id": fact.file_id,
        "etat": fact.etat,
        "sdd": fact.sdd,
        "present": fact.present,
    }


@dataclass(frozen=True)
class _Saved:
    """What taking a fact changes in a walk, to take it again (`_Timeline._take_fact`)."""

    suivi: _Suivi
    current: FluxFact | None
    suspended_since: date | None
    stock: bool
    episodes: int
    decisions: int
    attached: list[Episode]  # the episodes as they were (what the events attach to them is taken again)


class _Suivi:
    """The follow-up: opened by an orientation or a référent, closed by radiation, a long suspension, a move
    out of the département or an explicit closure; otherwise in progress (possibly dormant)."""

    def __init__(self) -> None:
        self.open_since: date | None = None
        self.source: str | None = None
        self.closed_on: date | None = None
        self.closed_reason: str | None = None

    @property
    def in_progress(self) -> bool:
        return self.open_since is not None and self.closed_on is None

    def open(self, on: date, source: str) -> None:
        self.open_since, self.source, self.closed_on, self.closed_reason = on, source, None, None

    def close(self, on: date, reason: str) -> None:
        if self.in_progress:
            # A follow-up opened during a suspension already longer than the limit closes when it opened,
            # never before (the explanation dated it at the limit, before its own opening: issue #9).
            assert self.open_since is not None
            self.closed_on, self.closed_reason = max(on, self.open_since), reason


# A person whose only fact is one state of the initial stock has no entry episode, whatever that state:
# the stock is not nouveaux entrants (SPEC §3). The ingestion relies on it to skip recomputing the persons an
# initial stock creates (app/flux/loader.py); tests/rules/test_rules.py asserts it for every kind of state.
STOCK_ALONE_OPENS_NOTHING = True


def compute_episodes(
    facts: Iterable[FluxFact], events: Iterable[Event], config: RulesConfig = DEFAULT
) -> PersonEpisodes:
    """All entry episodes of one person from all its facts (the result holds for any as-of date: see
    `outcome_as_of`)."""
    flux = sorted(facts, key=lambda f: (f.received_on, f.order))
    evts = sorted(events, key=event_order)
    if not flux and not evts:
        return PersonEpisodes([], [], False, False)
    return _Timeline(flux, evts, config).walk()


class _Timeline:
    """One walk through a person's timeline: reception dates of facts, dates of events, and the month ends
    in between (exit checks). Each day, the flux facts first (an orientation dated T0 counts as a delay of
    0 days), then the events."""

    def __init__(self, flux: list[FluxFact], evts: list[Event], config: RulesConfig) -> None:
        self.flux, self.evts, self.config = flux, evts, config
        self.suivi = _Suivi()
        self.episodes: list[Episode] = []
        self.decisions: list[Decision] = []
        self.stock = False
        self.current: FluxFact | None = None
        self.episode: Episode | None = None
        self.suspended_since: date | None = None  # start of the suspension in force (flux date or first suspended)
        # Follow-up events (orientation, référent, closure) since the last fact while no episode is open: they
        # wait for the next fact, which may be an entry they belong to (`_take_fact`).
        self.deferred: list[Event] = []
        self.next_month_end = month_end(flux[0].received_on) if flux else None

    def walk(self) -> PersonEpisodes:
        fi = ei = 0
        while fi < len(self.flux) or ei < len(self.evts):
            next_fact_day = self.flux[fi].received_on if fi < len(self.flux) else date.max
            next_event_day = self.evts[ei].on if ei < len(self.evts) else date.max
            day = min(next_fact_day, next_event_day)
            self._check_month_ends_before(day)
            while fi < len(self.flux) and self.flux[fi].received_on == day:
                self._take_fact(self.flux[fi])
                fi += 1
            while ei < len(self.evts) and self.evts[ei].on == day:
                self._take_event(self.evts[ei])
                ei += 1
        self._apply_deferred()
        # after the last point: the next month end decides an episode whose person has left
        if self.episode is not None and self.next_month_end is not None:
            self._check_exit(self.next_month_end)
        return PersonEpisodes(self.episodes, self.decisions, self.stock, self.suivi.in_progress)

    def _check_month_ends_before(self, day: date) -> None:
        """Month ends strictly before `day`: an open episode ends if criteria 1-2 fail there."""
        while self.next_month_end is not None and self.next_month_end < day:
            self._check_exit(self.next_month_end)
            self.next_month_end = month_end(self.next_month_end + timedelta(days=1))

    def _check_exit(self, day: date) -> None:
        if self.episode is not None and not in_droits_devoirs(self.current, self.config):
            self.episode.outcome = LEFT_BEFORE
            self.episode.end_on = day
            self.episode = None

    def _take_fact(self, fact: FluxFact) -> None:
        """One received file's state, after the follow-up events that waited for it.

        An orientation or a référent dated before T0 but belonging to this entry (docs/rules.md, "Settled in
        issue #22") is no follow-up in progress for criterion 3: it orients the episode at T0, delay 0. It
        belongs when it is dated after the person's last fact before T0 (which showed them out of droits et
        devoirs, or there was none) and not before the first day of the month before T0's month. So the
        fact is taken without those events; if no episode starts there, it is taken again after them, as
        any follow-up dated before it (an older one, of a previous spell, always is)."""
        early = self._early(fact)
        if not early:
            self._apply_deferred()
            self._take_fact_now(fact)
            return
        saved = self._save()
        deferred, self.deferred = self.deferred, []
        for ev in deferred:
            if not any(ev is e for e in early):
                self._apply_event(ev)
        self._take_fact_now(fact)
        if len(self.episodes) > saved.episodes and self.episode is self.episodes[-1]:
            episode = self.episode
            _orient(episode, early[0], self.config, on=episode.t0)
            episode.criteria["sans_suivi"].reason += (
                f"; the {early[0].type} dated {early[0].on.isoformat()}, after the last file before T0, belongs"
                " to this entry: oriented at T0"
            )
            self.episode = None
            for ev in early:
                self.suivi.open(ev.on, ev.type)
                if ev.type == "referent" and ev is not early[0]:  # designated after the orientation
                    episode.referents.append((ev.on, ev.structure or ev.organisme))
            return
        self._restore(saved)
        self.deferred = deferred
        self._apply_deferred()
        self._take_fact_now(fact)

    def _early(self, fact: FluxFact) -> list[Event]:
        """The waiting orientations and référents that would belong to an entry at `fact`."""
        if (
            not self.deferred
            or self.episode is not None
            or not in_droits_devoirs(fact, self.config)
            or in_droits_devoirs(self.current, self.config)
            or (fact.initial_stock and self.current is None)
        ):
            return []
        since = previous_month_end(fact.received_on).replace(day=1)
        closures = [ev.on for ev in self.deferred if ev.type == "suivi_clos"]
        # one the platform closed since (a `suivi_clos` dated on or after it) no longer holds: not early
        return [
            ev
            for ev in self.deferred
            if ev.type in ORIENTING_EVENTS and ev.on >= since and not any(on >= ev.on for on in closures)
        ]

    def _apply_deferred(self) -> None:
        deferred, self.deferred = self.deferred, []
        for ev in deferred:
            self._apply_event(ev)

    def _save(self) -> _Saved:
        return _Saved(
            copy.copy(self.suivi),
            self.current,
            self.suspended_since,
            self.stock,
            len(self.episodes),
            len(self.decisions),
            copy.deepcopy(self.episodes),
        )

    def _restore(self, saved: _Saved) -> None:
        self.suivi, self.current, self.suspended_since, self.stock = (
            saved.suivi,
            saved.current,
            saved.suspended_since,
            saved.stock,
        )
        self.episodes = saved.attached
        del self.decisions[saved.decisions :]
        self.episode = None

    def _take_fact_now(self, fact: FluxFact) -> None:
        """One received file's state: the suspension in force, the follow-up's closures, then an entry."""
        was_in = in_droits_devoirs(self.current, self.config)
        previous, self.current = self.current, fact
        suspended = fact.present and fact.etat in SUSPENDED
        if suspended:
            self._track_suspension(fact)
        self._close_suivi(fact)
        if not suspended and self.suspended_since is not None:
            self._end_suspension(fact)
        now_in = in_droits_devoirs(fact, self.config)
        if fact.initial_stock and previous is None:
            self._take_initial_stock(fact, now_in)
            return
        if self.episode is None and now_in:
            self._enter_or_decide(fact, was_in, previous)
        self._track_leaving(fact, now_in)

    def _track_suspension(self, fact: FluxFact) -> None:
        """When did the suspension in force start?"""
        self.suspended_since = self.suspended_since or fact.suspension_since or fact.received_on
        if fact.suspension_since and fact.suspension_since < self.suspended_since:
            self.suspended_since = fact.suspension_since

    def _close_suivi(self, fact: FluxFact) -> None:
        """The closures of the follow-up a file says: death, radiation, closure, a move out."""
        if fact.death_date is not None:
            # DTDC closes any follow-up and ends any entry episode, the day the file says so
            self.suivi.close(fact.received_on, "deces")
            if self.episode is not None:
                self.episode.outcome, self.episode.end_on = LEFT_BEFORE, fact.received_on
                if self.episode.left_on is None:
                    self._mark_left(self.episode, fact)
                self.episode = None
        elif not fact.present:
            self.suivi.close(fact.received_on, "radie" if fact.absence_reason != "left_foyer" else "sorti_du_foyer")
        elif fact.etat in ("5", "6") or fact.closure_date is not None:
            if fact.closure_motif == "MUT" or fact.transfer_out:
                self.suivi.close(fact.received_on, "demenagement")
            else:
                self.suivi.close(fact.received_on, "radie")
        elif fact.transfer_out:
            self.suivi.close(fact.received_on, "demenagement")

    def _end_suspension(self, fact: FluxFact) -> None:
        """A suspension ended: one longer than the limit closed the follow-up at the limit."""
        assert self.suspended_since is not None
        limit = add_months(self.suspended_since, self.config.long_suspension_months)
        if fact.received_on > limit:
            self.suivi.close(limit, "suspension_longue")
        self.suspended_since = None

    def _take_initial_stock(self, fact: FluxFact, now_in: bool) -> None:
        """The stock is the "file active": its persons in droits et devoirs are followed, and so are those
        whose right is suspended (their follow-up is dormant: "reprennent l'accompagnement avec le référent
        qui leur avait été désigné", 001 ~7482-7486). The suspension counts from the flux's start date, else
        the stock's date (`_track_suspension`), and closes the follow-up once longer than the limit."""
        self.stock = True
        if self.config.stock_is_followed and (now_in or self._suspended_in_droits_devoirs(fact)):
            self.suivi.open(fact.received_on, "stock")

    def _suspended_in_droits_devoirs(self, fact: FluxFact) -> bool:
        """In droits et devoirs but for the right being suspended (ETATDOSRSA 3 or 4, not versable)."""
        return (
            fact.present
            and fact.death_date is None
            and fact.etat in SUSPENDED
            and fact.sdd is True
            and fact.role in self.config.brsa_roles
        )

    def _enter_or_decide(self, fact: FluxFact, was_in: bool, previous: FluxFact | None) -> None:
        """In droits et devoirs without an open episode: a new episode if the three criteria hold (with its
        legal clock); else, if the person just came in, the decision that it is no entry, and why."""
        criteria = self._criteria(fact)
        if all(c.held for c in criteria.values()):
            self.episode = Episode(t0=fact.received_on, t0_file_id=fact.file_id, criteria=criteria)
            clock, reason, received_on = self._legal_clock(fact, previous)
            self.episode.legal_clock, self.episode.legal_clock_reason = clock, reason
            self.episode.legal_deadline = legal_deadline_from(received_on, self.config) if clock else None
            self.episodes.append(self.episode)
        elif not was_in:
            failed = [name for name, c in criteria.items() if not c.held]
            self.decisions.append(
                Decision(fact.received_on, fact.file_id, "; ".join(criteria[n].reason for n in failed))
            )

    def _criteria(self, fact: FluxFact) -> dict[str, Criterion]:
        """The three entry criteria on the day of `fact`, with their reasons and facts."""
        m1_day = previous_month_end(fact.received_on)
        prior = self._state_at(m1_day)
        if prior is None and self.flux[0].initial_stock and self.flux[0].received_on > m1_day:
            # SPEC §3, "Readings settled": the stock's state stands for the months before it
            prior = self.flux[0]
        m1_absent = not in_droits_devoirs(prior, self.config)
        return {
            "droit_versable": Criterion(True, f"ETATDOSRSA {fact.etat} counts as versable", [_fact_ref(fact)]),
            "soumis_droits_devoirs": Criterion(
                m1_absent,
                "soumis aux droits et devoirs now, and not at the end of the previous month"
                if m1_absent
                else "already in droits et devoirs at the end of the previous month",
                [_fact_ref(fact), {"at_end_of_previous_month": _fact_ref(prior)}],
            ),
            "sans_suivi": Criterion(not self.suivi.in_progress, _suivi_reason(self.suivi), []),
        }

    def _legal_clock(self, fact: FluxFact, previous: FluxFact | None) -> tuple[str | None, str, date]:
        """Did the T0 file bring "l'information relative soit à l'ouverture du droit au revenu de solidarité
        active, soit au transfert du droit au revenu de solidarité active dans son département" (CASF art.
        D.262-65-2)? Read from the person's last file before T0 (`previous`) and the state at the end of the
        previous month: docs/rules.md, "The legal deadline (décret n° 2024-1244)". The reason, either way
        (at most 200 characters: `entry_episodes.legal_clock_reason`).
        The clock counts from the reception of the file that brought the information (returned third): the T0
        file, or, when the right opened in an earlier file while the person was not yet in droits et devoirs
        (not soumis, another role), that earlier file, if received since the first day of the month before
        T0's (the window of docs/rules.md, "Settled in issue #22"); an opening older than that is no clock."""
        t0 = fact.received_on
        if fact.transfer_in_on is not None and not _right_open(previous) and not self._transfer_known(fact):
            origin = f" from {fact.transfer_in_from}" if fact.transfer_in_from else ""
            return (
                TRANSFERT_DROIT,
                (
                    f"transfer of the right into the département{origin} (OrganismeCedant, DDARRMUT "
                    f"{fact.transfer_in_on.isoformat()})"
                ),
                t0,
            )
        if previous is None:
            return OUVERTURE_DROIT, "opening of the right: no earlier file showed the person", t0
        seen = f"the file of {previous.received_on.isoformat()}"
        if not previous.present:
            return OUVERTURE_DROIT, f"opening of the right: absent from the previous file ({seen})", t0
        if previous.etat is None or previous.etat not in DROIT_OUVERT:
            return OUVERTURE_DROIT, f"opening of the right: no open right in {seen} (ETATDOSRSA {previous.etat})", t0
        if previous.numdemrsa and fact.numdemrsa and previous.numdemrsa != fact.numdemrsa:
            return OUVERTURE_DROIT, f"opening of the right: a new RSA demand (NUMDEMRSA changed since {seen})", t0
        opened = self._opened_in(fact)
        if opened is not None and opened.received_on >= previous_month_end(t0).replace(day=1):
            return (
                OUVERTURE_DROIT,
                (
                    f"opening of the right in the file of {opened.received_on.isoformat()}, before the entry in droits "
                    "et devoirs: the six weeks count from that file"
                ),
                opened.received_on,
            )
        if previous.etat in SUSPENDED or not is_versable(previous, self.config):
            why = f"end of a suspension (ETATDOSRSA {previous.etat} in {seen})"
        elif previous.role not in self.config.brsa_roles:
            why = f"role change ({previous.role} to {fact.role}), right already open in {seen}"
        elif previous.sdd is not True:
            why = f"back under the 500 € threshold (TOPPERSDRODEVORSA), right already open in {seen}"
        else:
            why = f"right already open in {seen}"
        if opened is not None:
            why += f", since {opened.received_on.isoformat()}"
        return None, f"no legal clock (neither the opening nor the transfer of the right): {why}", t0

    def _opened_in(self, fact: FluxFact) -> FluxFact | None:
        """The file that showed the right open first, in the run of files with an open right that ends just
        before `fact` (None when that run starts at the initial stock: the right was open before the service
        knew the person, or when the file before `fact` shows no open right)."""
        opened = None
        for f in self.flux:
            if (f.received_on, f.order) >= (fact.received_on, fact.order):
                break
            if not _right_open(f):
                opened = None
            elif opened is None:
                opened = f
        if opened is not None and opened.initial_stock:
            return None
        return opened

    def _transfer_known(self, fact: FluxFact) -> bool:
        """An earlier file already carried this transfer in (OrganismeCedant stays on the dossier's files)."""
        return any(
            f.present and f.transfer_in_on == fact.transfer_in_on
            for f in self.flux
            if (f.received_on, f.order) < (fact.received_on, fact.order)
        )

    def _state_at(self, day: date) -> FluxFact | None:
        found = None
        for f in self.flux:
            if f.received_on > day:
                break
            found = f
        return found

    def _track_leaving(self, fact: FluxFact, now_in: bool) -> None:
        """The open episode's left_on, and why: the first fact out of droits et devoirs, cleared on coming
        back."""
        if self.episode is not None and not now_in and self.episode.left_on is None:
            self._mark_left(self.episode, fact)
        if self.episode is not None and now_in:
            self.episode.left_on = self.episode.left_reason = self.episode.left_file_id = None

    def _mark_left(self, episode: Episode, fact: FluxFact) -> None:
        episode.left_on, episode.left_file_id = fact.received_on, fact.file_id
        episode.left_reason = left_reason(fact, self.config)

    def _take_event(self, ev: Event) -> None:
        """An orientation or a référent orients the open episode and opens the follow-up; a closure by the
        platform closes it; invitations, RDV and contracts attach to their episode. Without an open episode,
        the follow-up events wait for the next fact (`_take_fact`)."""
        if ev.type in FOLLOW_UP_EVENTS and self.episode is None:
            self.deferred.append(ev)
        else:
            self._apply_event(ev)

    def _apply_event(self, ev: Event) -> None:
        if ev.type in ORIENTING_EVENTS:
            if self.episode is not None and ev.on >= self.episode.t0:
                _orient(self.episode, ev, self.config)
                self.episode = None
            self.suivi.open(ev.on, ev.type)
        elif ev.type == "suivi_clos":
            self.suivi.close(ev.on, "cloture_plateforme")
        _attach(self.episodes, ev)


def event_order(e: Event) -> tuple[Any, ...]:
    """Events by date, then kind (`_EVENT_ORDER`), then content, and only then their key: two events of one
    day (two contracts, two référents) are taken in an order their content decides, never the order they
    reached the service (a key without external id is our id, given on arrival)."""
    # of two orientations of one day, the platform's (the Département's) before France Travail's
    content = (
        e.by_france_travail,
        e.contrat,
        e.structure,
        e.organisme,
        e.type_parcours,
        e.presence,
        e.accompagnement_global,
    )
    return (e.on, _EVENT_ORDER.get(e.type, 9), tuple("" if v is None else str(v) for v in content), e.key)


_EVENT_ORDER = {"orientation": 0, "referent": 1, "invitation": 2, "rdv_orientation": 3, "rdv_accompagnement": 4}


def _suivi_reason(suivi: _Suivi) -> str:
    if suivi.open_since is None:
        return "no known orientation or référent"
    if suivi.in_progress:
        return f"follow-up in progress since {suivi.open_since.isoformat()} ({suivi.source}), possibly dormant"
    return f"follow-up closed on {suivi.closed_on.isoformat() if suivi.closed_on else '?'} ({suivi.closed_reason})"


def _orient(episode: Episode, ev: Event, config: RulesConfig, on: date | None = None) -> None:
    """The episode ends oriented by `ev`, on its date (or on `on`: T0 for an orientation dated before T0 that
    belongs to the entry; `orientation` keeps its own date)."""
    end = on or ev.on
    episode.outcome = ORIENTED
    episode.end_on = end
    episode.oriented_by = ORIENTED_BY_FRANCE_TRAVAIL if ev.by_france_travail else ev.type
    episode.orientation = ev
    episode.orientations = [(end, ev.type_parcours)]
    episode.delay_days = (end - episode.t0).days
    episode.within_15_days = end < episode.t0 + timedelta(days=config.delay_days)
    episode.within_one_month = end < add_months(episode.t0, config.fallback_months)


# An accompaniment RDV took place unless the platform says it did not (`absent`, `excuse`, `annule`) or that it
# is only planned (`prevu`, whatever its date): `present`, or no presence given (the platform recorded the RDV
# without a status). Seed 001, Annexe 4 (pilotage file): "DATE_1ER_RDV_ACCOMPAGNEMENT date du 1er rdv
# d'accompagnement".
HELD = ("present", None)
# An orientation RDV counts (DATE_RDV_ORIENTATION: "date prévue du rdv d'orientation") unless cancelled
# (`annule`): no RDV took place.
NOT_CANCELLED = ("present", "absent", "excuse", "prevu", None)


def _attach(episodes: list[Episode], ev: Event) -> None:
    """Invitations, RDV, contracts and later référents belong to the latest episode that started on or before
    them (every episode starting on or before an event's day exists when it is taken: files first each day)."""
    target = None
    for ep in episodes:
        if ep.t0 <= ev.on:
            target = ep
    if target is None:
        return
    if ev.type == "invitation" and target.invitation_on is None:
        target.invitation_on = ev.on
    elif ev.type == "rdv_orientation":
        _attach_rdv_orientation(target, ev)
    elif ev.type == "rdv_accompagnement" and target.first_rdv_accompagnement_on is None and ev.presence in HELD:
        target.first_rdv_accompagnement_on = ev.on
    elif ev.type == "contrat":
        target.contrats.append((ev.on, ev.contrat))
    elif ev.type == CONTRAT_ENGAGEMENT:
        target.contrats.append((ev.on, CE))
        target.contrats_engagement.append((ev.on, ev.organisme))
    elif ev.type == "referent" and target.orientation is not None and ev is not target.orientation:
        target.referents.append((ev.on, ev.structure or ev.organisme))
    elif ev.type == "orientation" and target.orientation is not None and ev is not target.orientation:
        if ev.by_france_travail and target.orientations and target.orientations[-1][1] == ev.type_parcours:
            return  # France Travail's record of the parcours in force (its own date): no new decision
        target.orientations.append((ev.on, ev.type_parcours))  # a re-orientation: the contract's clock restarts


def _attach_rdv_orientation(target: Episode, ev: Event) -> None:
    """Cancelled (`annule`) never counts: no RDV took place; `prevu` and no presence are no presence."""
    if ev.presence not in NOT_CANCELLED:
        return
    target.rdv_orientation_on = target.rdv_orientation_on or ev.on
    if ev.presence == "absent" and target.rdv_orientation_missed_on is None:
        target.rdv_orientation_missed_on = ev.on
        if target._rdv_present_on == ev.on:  # seen the same day at another RDV: seen on or after the miss
            target.rdv_orientation_seen_on = ev.on
    elif ev.presence == "present":
        target._rdv_present_on = ev.on
        if target.rdv_orientation_missed_on is not None and target.rdv_orientation_seen_on is None:
            target.rdv_orientation_seen_on = ev.on
    elif ev.presence == "excuse" and target.rdv_orientation_excused_on is None:
        target.rdv_orientation_excused_on = ev.on


@dataclass(frozen=True)
class RdvOrientation:
    """An episode's orientation RDV as known on an as-of date."""

    missed: bool  # at least one orientation RDV missed (absent) on or before as_of
    never_seen: bool  # ... and not present at an orientation RDV on or after that day, up to as_of
    excused: bool  # at least one orientation RDV excused on or before as_of


def rdv_orientation_as_of(
    missed_on: date | None, seen_on: date | None, excused_on: date | None, as_of: date
) -> RdvOrientation:
    """THE reading of the orientation RDV's presences on as_of. Exact for any as-of date: the first miss is
    the earliest, and the first presence on or after it is the earliest that can answer "seen again by
    as_of"."""
    missed = known_as_of(missed_on, as_of) is not None
    return RdvOrientation(
        missed=missed,
        never_seen=missed and known_as_of(seen_on, as_of) is None,
        excused=known_as_of(excused_on, as_of) is not None,
    )


def dated_items(stored: Iterable[Any] | None) -> list[tuple[date, Any]]:
    """[date, value] items as an episode keeps them (`Episode.contrats`, `.referents`) or as stored (JSON,
    ISO dates), in their order (by date)."""
    return [(on if isinstance(on, date) else date.fromisoformat(on), value) for on, value in stored or ()]


def latest_as_of(stored: Iterable[Any] | None, as_of: date) -> tuple[date, Any] | None:
    """The latest of (date, value) items dated on or before as_of (None if none); of two the same day, the
    later kept (the events' order)."""
    found = None
    for item in dated_items(stored):
        if item[0] <= as_of:
            found = item
    return found


def last_contract_as_of(contrats: Iterable[Any] | None, as_of: date) -> tuple[date, str | None] | None:
    """The contract in force on as_of: the latest signed on or before it (seed 001, Annexe 4: "TYPE_CONTRAT
    différenciation CER ou PPAE")."""
    return latest_as_of(contrats, as_of)


def last_cer_as_of(contrats: Iterable[Any] | None, as_of: date) -> date | None:
    """The date of the latest CER or contrat d'engagement signed on or before as_of, whatever came after it
    (seed 001, Annexe 4: "DATE_CER date de signature du CER (et non du PPAE)"; the CE replaces the CER since
    2025: docs/exports.md)."""
    found = latest_as_of([(on, kind) for on, kind in dated_items(contrats) if kind in ("CER", CE)], as_of)
    return found[0] if found else None


def orientations_of(episode: Any) -> list[tuple[date, Any]]:
    """An episode's orientations ([date, type_parcours], by date): `Episode.orientations` or the stored
    column; a stored episode computed before the column existed (NULL) has its ending orientation only."""
    stored = getattr(episode, "orientations", None)
    if stored is not None:
        return dated_items(stored)
    if episode.outcome == ORIENTED and episode.end_on is not None:
        return [(episode.end_on, getattr(episode, "type_parcours", None))]
    return []


def orientation_as_of(episode: Any, as_of: date) -> date | None:
    """The latest orientation (the first or a re-orientation) dated on or before as_of: the one whose
    notification starts the contract's clock (None: not oriented by as_of)."""
    found = latest_as_of(orientations_of(episode), as_of)
    return found[0] if found else None


def contract_deadline_as_of(episode: Any, as_of: date) -> date | None:
    """The last day to conclude the contrat d'engagement, as known on as_of: one month after the notification
    of the notification of the latest orientation on or before as_of (Code du travail art. D.5411-14-1, for
    art. L.5411-6: docs/rules.md; oriented 15/03: 15/04 is in time, 16/04 late), None if not oriented by
    as_of. A new orientation decision opens a new month."""
    oriented_on = orientation_as_of(episode, as_of)
    return add_months(oriented_on, 1) if oriented_on is not None else None


def satisfies_clock(kind: Any) -> bool:
    """A contract that answers an orientation: a contrat d'engagement, or a CER / PPAE — those of the time
    they were the contracts (before 1 January 2025), and those recorded dated since by a platform before the
    service refused them (the contract the person signed, whatever its name: docs/rules.md)."""
    return kind in (CE, "CER", "PPAE")


def contract_after_orientation_as_of(episode: Any, as_of: date) -> date | None:
    """The first contract (`satisfies_clock`) signed on or after the latest orientation and on or before
    as_of: a contract signed before a re-orientation no longer answers it. None: still waiting (or not
    oriented)."""
    oriented_on = orientation_as_of(episode, as_of)
    if oriented_on is None:
        return None
    for on, kind in dated_items(getattr(episode, "contrats", None)):
        if oriented_on <= on <= as_of and satisfies_clock(kind):
            return on
    return None


def last_ce_as_of(episode: Any, as_of: date) -> tuple[date, Any] | None:
    """The latest contrat d'engagement signed on or before as_of, with its organisme."""
    return latest_as_of(getattr(episode, "contrats_engagement", None), as_of)


class Decidable(Protocol):
    """What the as-of reading needs of an episode: an `Episode`, an `EntryEpisode` row or a selected row."""

    @property
    def outcome(self) -> str: ...

    @property
    def end_on(self) -> date | None: ...


def outcome_as_of(episode: Decidable, as_of: date) -> str:
    """THE reading of an entry episode seen from an as-of date: its outcome (one of `DECISIONS`) if it was
    decided on or before as_of, else still waiting (`WAITING`). (An episode's T0 and criteria depend only on
    facts dated up to T0, so this is exact.) Its SQL twin, for stored episodes, is in
    `app.orientation.episodes` (`waiting_on`, `decided_by`, `oriented_by`)."""
    if episode.end_on is not None and episode.end_on <= as_of and episode.outcome in DECISIONS:
        return episode.outcome
    return WAITING


def decision_as_of(episode: Decidable, as_of: date) -> str | None:
    """`outcome_as_of`, with None for an episode still waiting on as_of."""
    outcome = outcome_as_of(episode, as_of)
    return None if outcome == WAITING else outcome


def known_as_of(day: date | None, as_of: date) -> date | None:
    """A dated fact of an episode (an appointment, a contract, a departure) as known on as_of: its date if
    on or before as_of, else None."""
    return day if day is not None and day <= as_of else None
