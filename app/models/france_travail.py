"""What France Travail said of a person, dated and never overwritten (issue #12).

- `FtIdentity`: each identity search (Rechercher usager): its code, certification, the `jetonUsager`
  encrypted at rest with its expiry (read from the jeton), and whether our policy lets it be used.
- `FtSnapshot`: each status (`statut`), diagnostic (`diagnostic`) or France Travail orientation
  (`orientation`) that differed from the one before, in the convention's vocabulary
  (app.france_travail.mapping); `no_data` when France Travail answered 204.
- `FtCall`: each call's outcome (API, status, code, attempts, duration): the trace of the exchanges.
- `FtSyncRun` / `FtSyncItem`: a sync run and each person it settled (resume after an interruption).
- `FtOutboxItem`: an orientation decision to push to France Travail (Orientation usager v1), once.

No foreign keys to persons: like the other bulk tables, the purge (issue #14) removes rows explicitly.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Index, Integer, PrimaryKeyConstraint, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow
from app.models.flux import BigId


class FtIdentity(Base):
    __tablename__ = "ft_identities"
    __table_args__ = (Index("ix_ft_identities_person", "person_id", "searched_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    person_id: Mapped[int] = mapped_column(BigInteger)
    departement_code: Mapped[str] = mapped_column(String(3))
    searched_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    code: Mapped[str] = mapped_column(String(8))  # S001 | S002 | S003 | R001 | R002 | R997 | R998 | HTTP404
    outcome: Mapped[str] = mapped_column(String(20))  # found | unknown | ambiguous | refused | not_certified | error
    certified: Mapped[bool | None] = mapped_column(Boolean)
    jeton_encrypted: Mapped[str | None] = mapped_column(Text)
    jeton_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    source: Mapped[str] = mapped_column(String(10))  # api | sync
    agent: Mapped[str | None] = mapped_column(String(100))


class FtSnapshot(Base):
    __tablename__ = "ft_snapshots"
    __table_args__ = (Index("ix_ft_snapshots_person", "person_id", "kind", "fetched_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    person_id: Mapped[int] = mapped_column(BigInteger)
    departement_code: Mapped[str] = mapped_column(String(3))
    kind: Mapped[str] = mapped_column(String(12))  # statut | diagnostic | orientation
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    no_data: Mapped[bool] = mapped_column(Boolean, default=False)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    fingerprint: Mapped[str] = mapped_column(String(64))
    identity_id: Mapped[int | None] = mapped_column(BigInteger)


class FtCall(Base):
    __tablename__ = "ft_calls"
    __table_args__ = (Index("ix_ft_calls_person", "person_id", "at"), Index("ix_ft_calls_at", "at"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    person_id: Mapped[int | None] = mapped_column(BigInteger)
    departement_code: Mapped[str] = mapped_column(String(3))
    api: Mapped[str] = mapped_column(String(30))
    operation: Mapped[str] = mapped_column(String(40))
    http_status: Mapped[int | None] = mapped_column(Integer)
    code: Mapped[str | None] = mapped_column(String(40))
    attempts: Mapped[int] = mapped_column(Integer)
    duration_ms: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(10))  # api | sync | push
    agent: Mapped[str | None] = mapped_column(String(100))


class FtSyncRun(Base):
    __tablename__ = "ft_sync_runs"
    __table_args__ = (Index("ix_ft_sync_runs_open", "departement_code", "finished_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    departement_code: Mapped[str] = mapped_column(String(3))
    options: Mapped[dict[str, Any]] = mapped_column(JSON)
    options_key: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    holder: Mapped[str | None] = mapped_column(String(120))  # host:pid of the process running it
    status: Mapped[str] = mapped_column(String(12), default="running")  # running | done | abandoned
    total: Mapped[int] = mapped_column(Integer, default=0)


class FtSyncItem(Base):
    __tablename__ = "ft_sync_items"
    __table_args__ = (PrimaryKeyConstraint("run_id", "person_id"),)

    run_id: Mapped[int] = mapped_column(BigInteger)
    person_id: Mapped[int] = mapped_column(BigInteger)
    outcome: Mapped[str] = mapped_column(String(20))
    code: Mapped[str | None] = mapped_column(String(40))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class FtOutboxItem(Base):
    __tablename__ = "ft_outbox"
    __table_args__ = (
        Index("uq_ft_outbox_event", "event_id", unique=True),
        Index("ix_ft_outbox_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_id: Mapped[int] = mapped_column(BigInteger)
    person_id: Mapped[int] = mapped_column(BigInteger)
    departement_code: Mapped[str] = mapped_column(String(3))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    # pending -> sending -> sent | pending (retry) | failed; superseded by a later decision; skipped (not mapped)
    status: Mapped[str] = mapped_column(String(12))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_error: Mapped[str | None] = mapped_column(String(300))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
