"""The weekly files for France Travail (issue #13): each built file, its download links, each download,
and the leases that keep two runs of a job from publishing twice."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow
from app.models.flux import BigId


class Export(Base):
    """One weekly file of a département: built (encrypted on disk, its checksum kept), then published (its
    links e-mailed). Rebuilding the same week gives the same bytes: the row is kept, not duplicated."""

    __tablename__ = "exports"
    __table_args__ = (Index("uq_exports_week_kind", "departement_code", "week", "kind", unique=True),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    departement_code: Mapped[str] = mapped_column(String(3))
    week: Mapped[str] = mapped_column(String(8))  # 2024-W10
    kind: Mapped[str] = mapped_column(String(10))  # flux | pilotage
    filename: Mapped[str] = mapped_column(String(120))
    rows: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))  # of the file as served (plain CSV)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    key_id: Mapped[str] = mapped_column(String(40))
    path: Mapped[str] = mapped_column(String(500))  # the encrypted file
    built_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ExportLink(Base):
    """A download link: the token is the credential (given once, in the e-mail); only its keyed hash is
    kept. Expires, may be single-use, may be revoked."""

    __tablename__ = "export_links"
    __table_args__ = (Index("uq_export_links_token", "token_hash", unique=True),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    export_id: Mapped[int] = mapped_column(BigInteger)
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    single_use: Mapped[bool] = mapped_column(default=False)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    recipients: Mapped[str] = mapped_column(String(1000))


class ExportDownload(Base):
    """Each use of a link, served or refused: who (the link, the address), when, what came of it."""

    __tablename__ = "export_downloads"
    __table_args__ = (Index("ix_export_downloads_export", "export_id", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    link_id: Mapped[int | None] = mapped_column(BigInteger)
    export_id: Mapped[int | None] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(200))
    outcome: Mapped[str] = mapped_column(String(20))  # served | expired | revoked | used | unknown | corrupted


class JobLease(Base):
    """One run of a job at a time for a scope (`export weekly` of a département): its holder and heartbeat;
    a lease whose process is gone, or silent too long, is taken over."""

    __tablename__ = "job_leases"

    job: Mapped[str] = mapped_column(String(40), primary_key=True)
    scope: Mapped[str] = mapped_column(String(40), primary_key=True)
    holder: Mapped[str] = mapped_column(String(120))
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
