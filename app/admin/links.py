"""Single-use links to the dashboard (issue #26): beside the identity provider, an administrator prints
(`passerelle dashboard link --departement 055 --name "Prénom Nom"`) a link that opens one browser session for
the person named, on one département, with the scope `pilotage:read` only.

The token is random (256 bits), shown once, stored only as its keyed hash (like an API key), valid
`minutes` (15 by default) and used once: the first visit consumes it in one conditional UPDATE (two visits at
once: one session). Its creation and every use, refused ones included, are audit events (`dashboard.link`,
`dashboard.login`); the token never reaches a log (`?jeton=` is masked in access logs, app.logging).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from app.audit.chain import record_action, record_action_now
from app.models import DashboardLink
from app.security.apikeys import hash_key
from app.security.login import LoginError
from app.settings import Settings

PATH = "/connexion/lien"
MAX_MINUTES = 24 * 60
CREATED_BY = "job:dashboard link"


@dataclass(frozen=True)
class CreatedLink:
    link_id: int
    token: str
    expires_at: datetime


@dataclass(frozen=True)
class Redeemed:
    link_id: int
    departement: str
    name: str


def link_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}{PATH}?jeton={token}"


def create_link(session: Session, settings: Settings, *, departement: str, name: str, minutes: int) -> CreatedLink:
    """Inside the caller's write transaction. `name`: the person's name, 1-100 printable characters."""
    name = " ".join(name.split())
    if not name or len(name) > 100 or any(ord(c) < 32 or c == "|" for c in name):
        raise ValueError("--name: 1 to 100 printable characters, without '|'")
    if not 1 <= minutes <= MAX_MINUTES:
        raise ValueError(f"--minutes: from 1 to {MAX_MINUTES}")
    token = secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + timedelta(minutes=minutes)
    link = DashboardLink(token_hash=hash_key(token, settings.pepper), departement_code=departement,
                         person_name=name, expires_at=expires)  # fmt: skip
    session.add(link)
    session.flush()
    record_action(session, CREATED_BY, "dashboard.link", departement,
                  detail={"lien": link.id, "minutes": minutes})  # fmt: skip
    return CreatedLink(link.id, token, expires)


class LinkRefused(LoginError):
    """The link is unknown, used or expired: said in French; `principal`, `departement` and `detail` are for
    its audit event (recorded by the caller once its transaction is rolled back)."""

    def __init__(self, message: str, principal: str, departement: str | None, detail: dict[str, object]) -> None:
        super().__init__(message)
        self.principal, self.departement, self.detail = principal, departement, detail

    def record(self, engine: Engine, source_address: str | None) -> None:
        record_action_now(engine, self.principal, "dashboard.login", self.departement, outcome="refused",
                          detail=self.detail, source_address=source_address)  # fmt: skip


def redeem(session: Session, settings: Settings, token: str | None, session_id: str,
           source_address: str | None = None) -> Redeemed:  # fmt: skip
    """Consume the link (inside the caller's write transaction) for the session `session_id`, its use audited
    with that transaction. Raises LinkRefused if the token is unknown, already used or expired."""
    now = datetime.now(UTC)
    digest = hash_key(token or "", settings.pepper)
    link = session.scalar(select(DashboardLink).where(DashboardLink.token_hash == digest)) if token else None
    if link is None:
        raise LinkRefused("Ce lien de connexion n'est pas valable : demandez-en un nouveau.", "lien:inconnu", None,
                          {"raison": "inconnu"})  # fmt: skip
    consumed = session.execute(  # type: ignore[attr-defined]  # an UPDATE's CursorResult
        update(DashboardLink)
        .where(DashboardLink.id == link.id, DashboardLink.used_at.is_(None), DashboardLink.expires_at > now)
        .values(used_at=now, session_id=session_id)
        .execution_options(synchronize_session=False)
    ).rowcount
    if consumed != 1:
        used = link.used_at is not None or link.expires_at > now
        raise LinkRefused(
            "Ce lien de connexion a déjà servi : demandez-en un nouveau."
            if used
            else "Ce lien de connexion a expiré : demandez-en un nouveau.",
            f"lien:{link.id}",
            link.departement_code,
            {"lien": link.id, "raison": "deja_utilise" if used else "expire"},
        )
    record_action(session, f"lien:{link.id}", "dashboard.login", link.departement_code,
                  detail={"lien": link.id}, source_address=source_address)  # fmt: skip
    return Redeemed(link.id, link.departement_code, link.person_name)
