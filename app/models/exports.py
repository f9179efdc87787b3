"""The weekly files for France Travail (issue #13): each built file, its download links, each download,
and the leases that keep two runs of a job from publishing twice."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String, Text
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


class ExportMail(Base):
    """The e-mail announcing a week's links, kept from before it is sent until the server accepted it (issue
    #24 item 4): committed with the links it announces (`sending`), so that a run killed after the server
    took it but before `sent` was recorded sends the very same message again (same Message-ID, same links:
    one message to the reader) instead of a second one with new links. `failed`: the server refused it (its
    links revoked); the next run retries the week until `sent`, or until an operator cancels it
    (`cancelled`). The message holds the links (credentials): encrypted with the NIR keys (rotated with
    them), and emptied once `sent`."""

    __tablename__ = "export_mails"
    __table_args__ = (
        Index("uq_export_mails_message_id", "message_id", unique=True),
        Index("ix_export_mails_week", "departement_code", "week", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    departement_code: Mapped[str] = mapped_column(String(3))
    week: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(10))  # sending | sent | failed | cancelled | superseded
    message_id: Mapped[str] = mapped_column(String(200))
    message_encrypted: Mapped[str] = mapped_column(Text, default="")  # "" once sent, failed or cancelled
    export_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    link_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())  # the links'
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error: Mapped[str | None] = mapped_column(String(200))


class JobLease(Base):
    """One run of a job at a time for a scope (`export weekly` of a département): its holder and heartbeat;
    a lease whose process is gone, or silent too long, is taken over."""

    __tablename__ = "job_leases"

    job: Mapped[str] = mapped_column(String(40), primary_key=True)
    scope: Mapped[str] = mapped_column(String(40), primary_key=True)
    holder: Mapped[str] = mapped_column(String(120))
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class FtReturnFile(Base):
    """A file France Travail sent back (Annexe 4, "en retour"): received once per content and département."""

    __tablename__ = "ft_return_files"
    __table_args__ = (Index("uq_ft_return_files_content", "departement_code", "content_sha256", unique=True),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    departement_code: Mapped[str] = mapped_column(String(3))
    filename: Mapped[str] = mapped_column(String(255))
    content_sha256: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    received_by: Mapped[str | None] = mapped_column(String(120))
    encoding: Mapped[str] = mapped_column(String(20))
    separator: Mapped[str] = mapped_column(String(1))
    rows: Mapped[int] = mapped_column(Integer)
    matched: Mapped[int] = mapped_column(Integer)
    ambiguous: Mapped[int] = mapped_column(Integer)
    unmatched: Mapped[int] = mapped_column(Integer)


class FtReturnRow(Base):
    """One line of a return file: the person it was matched to (names + birth date + commune), or why not;
    its values under the convention's column names. Dated by the file's reception."""

    __tablename__ = "ft_return_rows"
    __table_args__ = (
        Index("ix_ft_return_rows_person", "person_id", "file_id"),
        Index("ix_ft_return_rows_file", "file_id", "line"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    file_id: Mapped[int] = mapped_column(BigInteger)
    line: Mapped[int] = mapped_column(Integer)
    person_id: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(12))  # matched | ambiguous | unmatched
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
