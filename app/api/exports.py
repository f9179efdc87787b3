"""The download of a weekly file by France Travail's agents: the link (from the e-mail) is the credential.

No API key: the agents open the link in a browser. The token is long and random, only its keyed hash is
stored; a link expires (`PASSERELLE_EXPORT_LINK_DAYS`), may be single-use, may be revoked. Every use,
served or refused, is recorded (link, address, when); a file served is also recorded with the other
personal-data reads. Messages are in French: France Travail's agents read them.
"""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import IO, Annotated, Any

import anyio
import structlog
from fastapi import APIRouter, Path, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import insert, select, update

from app.api.deps import SessionDep, SettingsDep, run_write
from app.db import write_transaction
from app.errors import ApiError
from app.exports.publish import IntegrityError, aad_of, decrypt_file, token_hash
from app.models import AccessRecord, Export, ExportDownload, ExportLink
from app.models.base import utcnow

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/api/v1/exports", tags=["exports"])


class LinkInvalid(ApiError):
    status_code = 403
    code = "link_invalid"


class LinkGone(ApiError):
    status_code = 410
    code = "link_gone"


class ExportCorrupted(ApiError):
    status_code = 409
    code = "export_corrupted"


Token = Annotated[str, Path(min_length=20, max_length=100, pattern=r"^[A-Za-z0-9_-]+$", description="From the e-mail")]


@router.get(
    "/download/{token}",
    summary="Download a weekly file for France Travail (the link from the e-mail is the credential)",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/csv": {}}, "description": "The file (CSV ; UTF-8)"},
        403: {"description": "Unknown or forged link"},
        410: {"description": "Expired, revoked or already used link"},
        409: {"description": "The stored file no longer matches its checksum: not served"},
    },
)
async def download(token: Token, request: Request, session: SessionDep, settings: SettingsDep) -> StreamingResponse:
    address = request.client.host if request.client else None
    agent = (request.headers.get("user-agent") or "")[:200] or None
    hashed = token_hash(settings, token)

    def check() -> tuple[Any, Any, IO[bytes] | None, str]:
        found = session.execute(
            select(ExportLink, Export)
            .join(Export, Export.id == ExportLink.export_id)
            .where(ExportLink.token_hash == hashed)
        ).first()
        session.commit()
        if found is None:
            return None, None, None, "unknown"
        link, export = found
        now = utcnow()
        if link.revoked_at is not None:
            return link, export, None, "revoked"
        if link.expires_at <= now:
            return link, export, None, "expired"
        if link.single_use and link.used_at is not None:
            return link, export, None, "used"
        try:
            plain = decrypt_file(FilePath(export.path), settings.export_key_ring, aad_of(export), export.sha256)
        except (IntegrityError, OSError) as exc:
            log.error("export_corrupted", export_id=export.id, reason=str(exc))
            return link, export, None, "corrupted"
        return link, export, plain, "served"

    link, export, plain, outcome = await anyio.to_thread.run_sync(check)

    def record() -> str:
        with write_transaction(session):
            result = outcome
            if result == "served" and link.single_use:
                claimed = session.execute(  # type: ignore[attr-defined]  # an UPDATE's CursorResult
                    update(ExportLink)
                    .where(ExportLink.id == link.id, ExportLink.used_at.is_(None))
                    .values(used_at=utcnow())
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
            if result == "served":
                session.execute(
                    insert(AccessRecord).values(
                        at=utcnow(),
                        principal_id=f"link:{link.id}",
                        agent_identifiant=None,
                        departement_code=export.departement_code,
                        person_id=None,
                        action=f"export.download.{export.kind}",
                        endpoint="GET /api/v1/exports/download",
                        request_id=getattr(request.state, "request_id", None),
                        found=True,
                    )
                )
        return result

    outcome = await run_write(request, record)
    if outcome != "served":
        if plain is not None:
            plain.close()
        _refuse(outcome)
    assert plain is not None

    def chunks() -> Any:
        try:
            while chunk := plain.read(1 << 16):
                yield chunk
        finally:
            plain.close()

    return StreamingResponse(
        chunks(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{export.filename}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


def _refuse(outcome: str) -> None:
    if outcome == "unknown":
        raise LinkInvalid("Ce lien de téléchargement n'est pas valide.")
    if outcome == "corrupted":
        raise ExportCorrupted(
            "Le fichier stocké ne correspond plus à son empreinte : il n'est pas transmis. "
            "Le Département en est averti et vous enverra un nouveau lien."
        )
    reasons = {
        "expired": "Ce lien a expiré. Demandez au Département un nouvel envoi.",
        "revoked": "Ce lien a été révoqué par le Département.",
        "used": "Ce lien a déjà servi (lien à usage unique). Demandez au Département un nouvel envoi.",
    }
    raise LinkGone(reasons[outcome], code=f"link_{outcome}")
