"""The download links of the weekly files: a token's link found and checked (unknown, revoked, expired,
used, corrupted or served), each use of a known link recorded (a download served or a corrupted file with an
audit event; a refused link's audit event is counted per minute by app.api.refusals), the refusal said
to France Travail's agents (in French), the files listed with their live links and downloads, a file's
links revoked. Never commits: the caller's transaction does."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, NamedTuple

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.audit.chain import action_row
from app.audit.proof import insert_events
from app.errors import Conflict, Forbidden, NotFound, PasserelleError
from app.exports.publish import IntegrityError, aad_of, decrypt_file
from app.models import Export, ExportDownload, ExportLink
from app.models.base import utcnow
from app.settings import Settings

log = structlog.get_logger(__name__)


class LinkInvalid(Forbidden):
    code = "link_invalid"


class LinkGone(PasserelleError):
    status_code = 410
    code = "link_gone"


class ExportCorrupted(Conflict):
    code = "export_corrupted"


_GONE = {
    "expired": "Ce lien a expiré. Demandez au Département un nouvel envoi.",
    "revoked": "Ce lien a été révoqué par le Département.",
    "used": "Ce lien a déjà servi (lien à usage unique). Demandez au Département un nouvel envoi.",
}


def refusal(outcome: str) -> PasserelleError:
    """The error a refused download answers (403 unknown, 409 corrupted, 410 expired, revoked or used)."""
    if outcome == "unknown":
        return LinkInvalid("Ce lien de téléchargement n'est pas valide.")
    if outcome == "corrupted":
        return ExportCorrupted(
            "Le fichier stocké ne correspond plus à son empreinte : il n'est pas transmis. "
            "Le Département en est averti et vous enverra un nouveau lien."
        )
    return LinkGone(_GONE[outcome], code=f"link_{outcome}")


class Checked(NamedTuple):
    """A download link checked: the link and its file when known, the file opened when it may be served,
    and the outcome (unknown, revoked, expired, used, corrupted or served)."""

    link: Any
    export: Any
    plain: IO[bytes] | None
    outcome: str


def find_link(session: Session, hashed: list[str]) -> tuple[ExportLink, Export] | None:
    """The link of a token's hashes (any of the key ring's), with its file; None when unknown."""
    found = session.execute(
        select(ExportLink, Export)
        .join(Export, Export.id == ExportLink.export_id)
        .where(ExportLink.token_hash.in_(hashed))
    ).first()
    return None if found is None else (found[0], found[1])


def check_link(settings: Settings, found: tuple[ExportLink, Export] | None) -> Checked:
    """Whether a link's file may be served: the link live, the file decrypted and its checksum right."""
    if found is None:
        return Checked(None, None, None, "unknown")
    link, export = found
    now = utcnow()
    if link.revoked_at is not None:
        return Checked(link, export, None, "revoked")
    if link.expires_at <= now:
        return Checked(link, export, None, "expired")
    if link.single_use and link.used_at is not None:
        return Checked(link, export, None, "used")
    try:
        plain = decrypt_file(Path(export.path), settings.export_key_ring, aad_of(export), export.sha256)
    except (IntegrityError, OSError) as exc:
        log.error("export_corrupted", export_id=export.id, reason=str(exc))
        return Checked(link, export, None, "corrupted")
    return Checked(link, export, plain, "served")


REFUSED = frozenset({"unknown", "revoked", "expired", "used"})  # the caller's link, not the stored file


def link_principal(checked: Checked) -> str:
    return f"link:{checked.link.id}" if checked.link else "link:unknown"


def download_action(checked: Checked) -> str:
    return f"export.download.{checked.export.kind}" if checked.export else "export.download"


def link_departement(checked: Checked) -> str | None:
    return checked.export.departement_code if checked.export else None


def record_use(
    session: Session, checked: Checked, address: str | None, agent: str | None, request_id: str | None
) -> str:
    """Record the attempt of a known link (served or refused) and, when served, the link's use (a single-use
    link claimed once: a download that lost the race is "used"); returns the final outcome. A download
    served, or a stored file found corrupted, is an audit event here; a refused link is counted by the
    caller, one audit event per link, address and minute (issue #23)."""
    link, export = checked.link, checked.export
    result = checked.outcome
    if result == "served" and link.single_use:
        claimed = session.execute(  # type: ignore[attr-defined]  # an UPDATE's CursorResult
            update(ExportLink).where(ExportLink.id == link.id, ExportLink.used_at.is_(None)).values(used_at=utcnow())
        ).rowcount
        if not claimed:
            result = "used"  # another download took it a moment ago
    elif result == "served":
        session.execute(update(ExportLink).where(ExportLink.id == link.id).values(used_at=utcnow()))
    session.add(
        ExportDownload(
            link_id=link.id if link else None,
            export_id=export.id if export else None,
            address=address,
            user_agent=agent,
            outcome=result,
        )
    )
    if result in REFUSED:
        return result
    # a download of personal data, or a file that could not be served (by whom, where)
    insert_events(
        session,
        [
            action_row(
                link_principal(checked),
                download_action(checked),
                link_departement(checked),
                outcome="ok" if result == "served" else "refused",
                detail=None if result == "served" else {"reason": result},
                endpoint="GET /api/v1/exports/download",
                request_id=request_id,
                source_address=address,
            )
        ],
    )
    return result


@dataclass(frozen=True)
class Listed:
    """A file built, its links still usable and how many times it was served."""

    export: Export
    live: list[ExportLink]
    served: int

    @property
    def live_until(self) -> datetime | None:
        return max((k.expires_at for k in self.live), default=None)


def _live(links: list[ExportLink]) -> list[ExportLink]:
    now = utcnow()
    return [k for k in links if k.revoked_at is None and k.expires_at > now and not (k.single_use and k.used_at)]


def list_exports(session: Session, departements: list[str], week: str | None) -> list[Listed]:
    """The files of these départements (of this week, if given), latest week first, at most 200."""
    query = select(Export).where(Export.departement_code.in_(departements))
    if week:
        query = query.where(Export.week == week)
    rows = list(session.scalars(query.order_by(Export.week.desc(), Export.departement_code, Export.kind).limit(200)))
    ids = [r.id for r in rows]
    links: dict[int, list[ExportLink]] = {}
    for link in session.scalars(select(ExportLink).where(ExportLink.export_id.in_(ids))) if ids else []:
        links.setdefault(link.export_id, []).append(link)
    served = (
        dict(
            session.execute(
                select(ExportDownload.export_id, func.count())
                .where(ExportDownload.export_id.in_(ids), ExportDownload.outcome == "served")
                .group_by(ExportDownload.export_id)
            ).all()
        )
        if ids
        else {}
    )
    return [Listed(r, _live(links.get(r.id, [])), int(served.get(r.id, 0))) for r in rows]


def revoke_links(session: Session, export_id: int, departements: set[str] | frozenset[str]) -> int:
    """Revoke every live link of a file of one of these départements (404 otherwise): how many were."""
    row = session.get(Export, export_id)
    if row is None or row.departement_code not in departements:
        raise NotFound("No such export.")
    result = session.execute(
        update(ExportLink)
        .where(ExportLink.export_id == export_id, ExportLink.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]  # an UPDATE's CursorResult
