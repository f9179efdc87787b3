"""Départements and the machine clients (API keys) allowed to call the service."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column, ForeignKey, String, Table
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, utcnow

api_client_departements = Table(
    "api_client_departements",
    Base.metadata,
    Column("client_id", ForeignKey("api_clients.id", ondelete="CASCADE"), primary_key=True),
    Column("departement_code", ForeignKey("departements.code"), primary_key=True),
)


class Departement(Base):
    """A Département; every row of personal data belongs to one (code on 3 characters, e.g. `055`)."""

    __tablename__ = "departements"

    code: Mapped[str] = mapped_column(String(3), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiClient(Base):
    """A machine client (orientation platform, nightly job, analysis tool) with an API key.

    Only the key's keyed hash is stored; the prefix (not secret) finds the row in one lookup.
    """

    __tablename__ = "api_clients"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]

    departements: Mapped[list[Departement]] = relationship(
        secondary=api_client_departements, lazy="selectin", order_by=Departement.code
    )

    @property
    def departement_codes(self) -> list[str]:
        return [d.code for d in self.departements]


class BrowserSessionRevocation(Base):
    """A dashboard session ended by its person (`/deconnexion`, issue #23): its cookie, even one copied
    before, opens nothing any more. Kept until the session would have expired anyway (then purged)."""

    __tablename__ = "browser_session_revocations"

    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the cookie's random `sid`
    expires_at: Mapped[datetime] = mapped_column()


class DashboardLink(Base):
    """A single-use link to the dashboard (`passerelle dashboard link`, issue #26): a random token, stored
    only as its keyed hash, that opens one browser session for the person named, on one département, once,
    before `expires_at`. `session_id` is the session it opened (ended like any other by `/deconnexion`)."""

    __tablename__ = "dashboard_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    departement_code: Mapped[str] = mapped_column(String(3))
    person_name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None]
    session_id: Mapped[str | None] = mapped_column(String(64))
