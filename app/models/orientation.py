"""Orientation-side facts sent by the platform (dated events) and the entry episodes derived from all facts."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Date, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow
from app.models.flux import BigId


class OrientationEvent(Base):
    """One event of a person's orientation path. Never updated: a correction is a new event that supersedes."""

    __tablename__ = "orientation_events"
    __table_args__ = (
        Index("ix_orientation_events_person", "person_id", "event_date"),
        Index(
            "uq_orientation_events_external_id",
            "departement_code",
            "external_id",
            unique=True,
            sqlite_where=text("external_id IS NOT NULL"),
            postgresql_where=text("external_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("persons.id", ondelete="CASCADE"))
    departement_code: Mapped[str] = mapped_column(String(3))
    type: Mapped[str] = mapped_column(String(24))
    event_date: Mapped[date] = mapped_column(Date)
    external_id: Mapped[str | None] = mapped_column(String(100))
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("orientation_events.id"))
    organisme: Mapped[str | None] = mapped_column(String(20))
    type_parcours: Mapped[str | None] = mapped_column(String(24))
    accompagnement_global: Mapped[bool | None] = mapped_column(Boolean)
    structure: Mapped[str | None] = mapped_column(String(200))
    referent: Mapped[str | None] = mapped_column(String(200))
    channel: Mapped[str | None] = mapped_column(String(20))
    presence: Mapped[str | None] = mapped_column(String(10))
    contrat_type: Mapped[str | None] = mapped_column(String(4))
    reason: Mapped[str | None] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(20))  # api | import | csv | ... | france_travail
    recorded_by: Mapped[str | None] = mapped_column(String(120))
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
    # France Travail's own orientation (source "france_travail", type "orientation", read by `ft sync` from
    # lectureOrientation: app.france_travail.orientations): its codes as France Travail gave them; NULL for
    # the platform's events. Only a DECIDE one orients (app.orientation.episodes.as_rule_event).
    ft_statut: Mapped[str | None] = mapped_column(String(10))  # PRECONISE | DECIDE
    ft_parcours: Mapped[str | None] = mapped_column(String(3))  # PED | PSP | PSO | EO | IND
    ft_organisme: Mapped[str | None] = mapped_column(String(3))  # FT | CD | ML | CE | IND
    ft_etat: Mapped[str | None] = mapped_column(String(12))  # EN_ATTENTE | BROUILLON | OUVERT | CLOTURE
    ft_etat_decision: Mapped[str | None] = mapped_column(String(30))
    ft_decision_on: Mapped[date | None] = mapped_column(Date)  # decision.date_decision
    ft_entree_parcours_on: Mapped[date | None] = mapped_column(Date)  # date_entree_parcours
    ft_code_safir: Mapped[str | None] = mapped_column(String(20))
    ft_code_aurore: Mapped[str | None] = mapped_column(String(20))


class EntryEpisode(Base):
    """An entry episode (nouvel entrant) computed by app.rules from every fact of the person.

    Recomputed whenever one of the person's facts changes; valid for any as-of date (see rules.outcome_as_of).
    """

    __tablename__ = "entry_episodes"
    __table_args__ = (
        Index("ix_entry_episodes_departement_t0", "departement_code", "t0"),
        Index("ix_entry_episodes_open", "departement_code", "open_until", "t0"),
        Index("ix_entry_episodes_person", "person_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("persons.id", ondelete="CASCADE"))
    departement_code: Mapped[str] = mapped_column(String(3))
    rank: Mapped[int] = mapped_column(Integer)
    t0: Mapped[date] = mapped_column(Date)
    t0_file_id: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(30))
    end_on: Mapped[date | None] = mapped_column(Date)
    # end_on, or 9999-12-31 while undecided: "open on day D" is then one index range (open_until > D).
    open_until: Mapped[date] = mapped_column(Date)
    left_on: Mapped[date | None] = mapped_column(Date)
    # why the person left (app.rules.episodes.LEFT_REASONS), from the file received on left_on
    left_reason: Mapped[str | None] = mapped_column(String(32))
    left_file_id: Mapped[int | None] = mapped_column(Integer)
    oriented_by: Mapped[str | None] = mapped_column(String(20))  # orientation | referent | france_travail
    delay_days: Mapped[int | None] = mapped_column(Integer)
    within_15_days: Mapped[bool | None] = mapped_column(Boolean)
    within_one_month: Mapped[bool | None] = mapped_column(Boolean)
    organisme: Mapped[str | None] = mapped_column(String(20))
    type_parcours: Mapped[str | None] = mapped_column(String(24))
    accompagnement_global: Mapped[bool | None] = mapped_column(Boolean)
    structure: Mapped[str | None] = mapped_column(String(200))
    # the orienting event's own date: end_on, or before T0 for one that belongs to the entry (then end_on = T0)
    orientation_on: Mapped[date | None] = mapped_column(Date)
    invitation_on: Mapped[date | None] = mapped_column(Date)
    rdv_orientation_on: Mapped[date | None] = mapped_column(Date)
    # dates, not flags, so that any as-of reading is exact (app.rules.episodes.rdv_orientation_as_of)
    rdv_orientation_missed_on: Mapped[date | None] = mapped_column(Date)
    rdv_orientation_seen_on: Mapped[date | None] = mapped_column(Date)
    rdv_orientation_excused_on: Mapped[date | None] = mapped_column(Date)
    first_rdv_accompagnement_on: Mapped[date | None] = mapped_column(Date)
    # every contract [["2024-04-02", "CER"], ...] and every référent designated after the orientation
    # [["2024-05-06", "structure"], ...], by date: the latest as of a date is read with rules.latest_as_of
    contrats: Mapped[list[Any] | None] = mapped_column(JSON)
    referents: Mapped[list[Any] | None] = mapped_column(JSON)
    # every contrat d'engagement [["2025-04-02", "DEPARTEMENT"], ...] (its organisme), also in `contrats` as "CE"
    contrats_engagement: Mapped[list[Any] | None] = mapped_column(JSON)
    # the orientation that ended the episode and every re-orientation after it [["2025-03-15", "social"], ...]:
    # the contract's deadline (rules.contract_deadline_as_of). NULL: stored before 0024 (its end_on only)
    orientations: Mapped[list[Any] | None] = mapped_column(JSON)
    caf_msa: Mapped[str | None] = mapped_column(String(3))
    commune: Mapped[str | None] = mapped_column(String(5))
    criteria: Mapped[dict[str, Any]] = mapped_column(JSON)
    # CASF art. D.262-65-2 (décret n° 2024-1244): "ouverture_droit" | "transfert_droit" when the T0 file brought
    # the opening or the transfer of the right, else NULL; why, either way; T0 + 42 days (the first day France
    # Travail may orient), NULL without a clock. docs/rules.md, "The legal deadline".
    legal_clock: Mapped[str | None] = mapped_column(String(20))
    legal_clock_reason: Mapped[str | None] = mapped_column(String(200))
    legal_deadline: Mapped[date | None] = mapped_column(Date)


class EpisodeQueue(Base):
    """Persons whose facts changed since their entry episodes were computed: one row per change, inserted by
    the writer of the facts (ingestion, events), deleted by the refresh that took them into account.

    Insert-only for writers, so marking a person never takes a lock that a reader or another writer holds
    (an `UPDATE persons SET stale` did, and deadlocked against refreshes: issue #8)."""

    __tablename__ = "episode_queue"
    __table_args__ = (Index("ix_episode_queue_person", "person_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    person_id: Mapped[int] = mapped_column(BigInteger)
    departement_code: Mapped[str] = mapped_column(String(3))


class WebhookDelivery(Base):
    """A delivery of a partner's webhook whose signature was valid, stored as received (the raw body
    encrypted at rest), with what was made of it; a bad signature stores nothing (docs/integrations.md)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_body", "departement_code", "body_sha256"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    source: Mapped[str] = mapped_column(String(20))  # rdv-insertion
    departement_code: Mapped[str] = mapped_column(String(3))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    body_encrypted: Mapped[str] = mapped_column(Text)
    body_sha256: Mapped[str] = mapped_column(String(64))
    signature_valid: Mapped[bool] = mapped_column(Boolean)
    model: Mapped[str | None] = mapped_column(String(20))
    event: Mapped[str | None] = mapped_column(String(20))
    meta_timestamp: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(20))  # processed | duplicate | malformed
    reason: Mapped[str | None] = mapped_column(String(300))


class WebhookItem(Base):
    """One thing a delivery says of one person (a participation in an RDV, an invitation), mapped to an
    event: applied to the person, or kept while the person is not (yet) known, or ignored as older."""

    __tablename__ = "webhook_items"
    __table_args__ = (
        Index("ix_webhook_items_record", "departement_code", "record_key", "meta_timestamp"),
        Index("ix_webhook_items_unmatched", "departement_code", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(BigInteger)
    departement_code: Mapped[str] = mapped_column(String(3))
    record_key: Mapped[str] = mapped_column(String(60))  # participation:123 | invitation:45
    meta_timestamp: Mapped[datetime] = mapped_column(UTCDateTime())
    keys: Mapped[list[str]] = mapped_column(JSON)  # how the person may be found (keyed hashes, never in clear)
    event: Mapped[dict[str, Any]] = mapped_column(JSON)  # the event it maps to (EventIn fields)
    status: Mapped[str] = mapped_column(String(20))  # applied | unmatched | older | planned | ignored
    reason: Mapped[str | None] = mapped_column(String(200))
    person_id: Mapped[int | None] = mapped_column(BigInteger)
    event_id: Mapped[int | None] = mapped_column(BigInteger)


class PendingEvent(Base):
    """An orientation event sent (CSV row, `POST /api/v1/events`) for a person no flux has brought yet: kept
    aside, the person reference and the event encrypted at rest, and applied with its own date when a flux
    brings the person (app.orientation.arrivals), or dropped by an operator (docs/integrations.md)."""

    __tablename__ = "pending_events"
    __table_args__ = (
        Index("ix_pending_events_status", "departement_code", "status"),
        Index("ix_pending_events_content", "departement_code", "content_hash"),
        Index("ix_pending_events_external_id", "departement_code", "external_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    departement_code: Mapped[str] = mapped_column(String(3))
    source: Mapped[str] = mapped_column(String(10))  # csv | api
    # how the person will be found, as a keyed hash: "nir:" + the NIR's lookup hash, or "mat:" + matricule+role
    person_key: Mapped[str] = mapped_column(String(80))
    # {"person": the reference, "event": the EventIn fields}, encrypted with the NIR keys (app.security.nir)
    payload_encrypted: Mapped[str] = mapped_column(Text)
    # keyed hash of the reference and the event's content (external_id aside): the same row twice is known
    content_hash: Mapped[str] = mapped_column(String(64))
    external_id: Mapped[str | None] = mapped_column(String(100))
    event_type: Mapped[str] = mapped_column(String(24))
    event_date: Mapped[date] = mapped_column(Date)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    recorded_by: Mapped[str] = mapped_column(String(120))
    status: Mapped[str] = mapped_column(String(10))  # pending | applied | dropped
    reason: Mapped[str | None] = mapped_column(String(300))
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_by: Mapped[str | None] = mapped_column(String(120))
    person_id: Mapped[int | None] = mapped_column(BigInteger)
    event_id: Mapped[int | None] = mapped_column(BigInteger)


class QueuedEvent(Base):
    """An event posted (`POST /api/v1/persons/{id}/events`) while a flux file held SQLite's writer: kept aside,
    durably, and applied right after the file (app.orientation.aside). On SQLite this table lives in the
    audit journal (the attached `audit` file, written while the main file's writer is held); on PostgreSQL,
    where an event is always applied at once, it stays empty. `status` is only `queued` or `done`: what
    became of it is in `queued_event_outcomes`, in the main database, written with the event itself."""

    __tablename__ = "queued_events"
    __table_args__ = (
        Index("ix_queued_events_status", "status", "id"),
        Index("ix_queued_events_key", "idempotency_key"),
        {"sqlite_autoincrement": True},  # ids never reused (a Location names one event for ever)
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)  # the arrival order
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    departement_code: Mapped[str] = mapped_column(String(3))
    person_id: Mapped[int] = mapped_column(BigInteger)
    principal_id: Mapped[str] = mapped_column(String(120))
    # keyed hash of the person and the external_id (or, without one, the event's content): a replay is this row
    idempotency_key: Mapped[str] = mapped_column(String(64))
    # the event (EventIn fields), the caller (its départements, agent) and its request's audit fields
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(10))  # queued | done


class QueuedEventOutcome(Base):
    """What became of an event kept aside (`queued_events`), written in the transaction that applied (or
    refused) it: the answer the 201 path would have given, read through `GET /api/v1/events/queued/{id}`."""

    __tablename__ = "queued_event_outcomes"

    queued_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    departement_code: Mapped[str] = mapped_column(String(3))
    person_id: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(10))  # applied | refused
    status_code: Mapped[int] = mapped_column(Integer)  # 201 (recorded), 200 (known already), or the error's
    event_id: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # {"error", "message", "details"} when refused
    resolved_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
