"""The download of a weekly file by France Travail's agents: the link (from the e-mail) is the credential.

No API key: the agents open the link in a browser. The token is long and random, only its keyed hash is
stored; a link expires (`PASSERELLE_EXPORT_LINK_DAYS`), may be single-use, may be revoked. Every use,
served or refused, is recorded (link, address, when); a file served is also recorded with the other
personal-data reads. Messages are in French: France Travail's agents read them.
"""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import IO, Annotated, Any, NamedTuple

import anyio
import structlog
from fastapi import APIRouter, File, Form, Path, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse
from pydantic import ConfigDict, Field
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from app.api.deps import Authorized, SessionDep, SettingsDep, run_write
from app.audit.chain import action_row
from app.clock import today
from app.db import get_engine, write_transaction
from app.errors import ApiError, NotFound, Unprocessable
from app.exports.publication import Publication
from app.exports.publish import (
    IntegrityError,
    PublishError,
    aad_of,
    decrypt_file,
    publish,
    token_hashes,
)
from app.exports.weekly import Week, WeekError
from app.france_travail.return_file import ingest
from app.kit.validation import InputModel
from app.models import AccessRecord, Export, ExportDownload, ExportLink
from app.models.base import utcnow
from app.security.auth import Principal
from app.security.scopes import Scope
from app.settings import Settings

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
    hashed = token_hashes(settings, token)
    checked = await anyio.to_thread.run_sync(_check_link, session, settings, hashed)
    outcome = await run_write(request, lambda: _record_use(session, request, checked, address, agent))
    if outcome != "served":
        if checked.plain is not None:
            checked.plain.close()
        _refuse(outcome)
    assert checked.plain is not None
    return _stream_file(checked.plain, checked.export.filename)


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


# -- the Département's side: list, publish, revoke, return files (scopes exports:read / exports:run) --------

Departement = Annotated[str, Query(pattern=r"^(\d{3}|02[AB])$", description="Département, e.g. 055")]


def _export_out(row: Export, links: list[ExportLink], served: int) -> dict[str, Any]:
    now = utcnow()
    live = [k for k in links if k.revoked_at is None and k.expires_at > now and not (k.single_use and k.used_at)]
    return {
        "id": row.id,
        "departement": row.departement_code,
        "semaine": row.week,
        "type": row.kind,
        "nom": row.filename,
        "lignes": row.rows,
        "sha256": row.sha256,
        "octets": row.size_bytes,
        "construit_le": row.built_at.isoformat(),
        "publie_le": row.published_at.isoformat() if row.published_at else None,
        "liens_actifs": len(live),
        "liens_expiration": max((k.expires_at for k in live), default=None),
        "telechargements": served,
    }


@router.get("", summary="The weekly files built, with their manifest, links and downloads")
def list_exports(
    session: SessionDep,
    principal: Annotated[Principal, Authorized(Scope.exports_read)],
    departement: Departement | None = None,
    week: Annotated[str | None, Query(pattern=r"^\d{4}-W\d{2}$")] = None,
) -> dict[str, Any]:
    deps = principal.chosen_departements(departement)
    query = select(Export).where(Export.departement_code.in_(deps))
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
    return {"items": [_export_out(r, links.get(r.id, []), int(served.get(r.id, 0))) for r in rows]}


class PublishIn(InputModel):
    model_config = ConfigDict(extra="forbid")

    departement: str = Field(pattern=r"^(\d{3}|02[AB])$")
    week: str | None = Field(default=None, pattern=r"^\d{4}-W\d{2}$", description="default: the last complete")
    resend: bool = False


@router.post(
    "/weekly",
    summary="Build and publish a week's files (as the nightly job does); idempotent unless resend",
    responses={
        409: {"description": "Another run publishes them now"},
        502: {"description": "The mail server refused or failed: nothing was published; run again"},
        503: {"description": "Exports are not configured (the setting is named in the message)"},
    },
)
async def publish_weekly(
    body: PublishIn,
    settings: SettingsDep,
    principal: Annotated[Principal, Authorized(Scope.exports_run)],
) -> dict[str, Any]:
    principal.require_departement(body.departement)
    try:
        week = Week.parse(body.week, today(settings)) if body.week else Week.last_complete(today(settings))
    except WeekError as exc:
        raise Unprocessable(str(exc), [{"loc": ["body", "week"], "msg": str(exc)}]) from None

    def run() -> Publication:
        return publish(get_engine(settings), settings, body.departement, week, resend=body.resend)

    try:  # ExportBusy (409), ExportsNotConfigured (503), PublishError (502): app.api.errors answers them
        result = await anyio.to_thread.run_sync(run)
    except OSError as exc:
        raise PublishError(str(exc)) from None
    return result.manifest() | {"envoye": result.mailed}


@router.post("/{export_id}/revoke", summary="Revoke every live link of a file")
async def revoke(
    export_id: Annotated[int, PathParam(ge=1, le=2**63 - 1)],
    request: Request,
    session: SessionDep,
    principal: Annotated[Principal, Authorized(Scope.exports_run)],
) -> dict[str, Any]:
    def work() -> int:
        with write_transaction(session):
            row = session.get(Export, export_id)
            if row is None or row.departement_code not in principal.departements:
                raise NotFound("No such export.")
            result = session.execute(
                update(ExportLink)
                .where(ExportLink.export_id == export_id, ExportLink.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            return int(result.rowcount)  # type: ignore[attr-defined]  # an UPDATE's CursorResult

    return {"export_id": export_id, "liens_revoques": await run_write(request, work)}


return_router = APIRouter(prefix="/api/v1/ft-return-files", tags=["exports"])


@return_router.post("", summary="France Travail's return file: matched to persons, stored dated")
async def post_return_file(
    file: Annotated[UploadFile, File(description="The CSV France Travail sent back")],
    departement: Annotated[str, Form(pattern=r"^(\d{3}|02[AB])$")],
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, Authorized(Scope.exports_run)],
) -> dict[str, Any]:
    principal.require_departement(departement)
    data = await file.read()

    def work() -> dict[str, Any]:
        with write_transaction(session):
            report = ingest(session, settings, departement, file.filename or "retour.csv", data, principal.id)
        return report.to_dict()

    return await run_write(request, work)


# -- the steps of `download`, in the order they run ---------------------------------------------------------


class _Checked(NamedTuple):
    """A download link checked: the link and its file when known, the file opened when it may be served,
    and the outcome (unknown, revoked, expired, used, corrupted or served)."""

    link: Any
    export: Any
    plain: IO[bytes] | None
    outcome: str


def _check_link(session: Session, settings: Settings, hashed: list[str]) -> _Checked:
    """The link of a token's hashes, and whether its file may be served (decrypted and checked)."""
    found = session.execute(
        select(ExportLink, Export)
        .join(Export, Export.id == ExportLink.export_id)
        .where(ExportLink.token_hash.in_(hashed))
    ).first()
    session.commit()
    if found is None:
        return _Checked(None, None, None, "unknown")
    link, export = found
    now = utcnow()
    if link.revoked_at is not None:
        return _Checked(link, export, None, "revoked")
    if link.expires_at <= now:
        return _Checked(link, export, None, "expired")
    if link.single_use and link.used_at is not None:
        return _Checked(link, export, None, "used")
    try:
        plain = decrypt_file(FilePath(export.path), settings.export_key_ring, aad_of(export), export.sha256)
    except (IntegrityError, OSError) as exc:
        log.error("export_corrupted", export_id=export.id, reason=str(exc))
        return _Checked(link, export, None, "corrupted")
    return _Checked(link, export, plain, "served")


def _record_use(session: Session, request: Request, checked: _Checked, address: str | None, agent: str | None) -> str:
    """Record the attempt (served or refused) and, when served, the link's use (a single-use link claimed
    once: a download that lost the race is "used"); returns the final outcome."""
    link, export = checked.link, checked.export
    with write_transaction(session):
        result = checked.outcome
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
        # every attempt is an audit event: a download of personal data, or a refused link (by whom, where)
        session.execute(
            insert(AccessRecord).values(
                action_row(
                    f"link:{link.id}" if link else "link:unknown",
                    f"export.download.{export.kind}" if export else "export.download",
                    export.departement_code if export else None,
                    outcome="ok" if result == "served" else "refused",
                    detail=None if result == "served" else {"reason": result},
                    endpoint="GET /api/v1/exports/download",
                    request_id=getattr(request.state, "request_id", None),
                    source_address=address,
                )
            )
        )
    return result


def _stream_file(plain: IO[bytes], filename: str) -> StreamingResponse:
    """The decrypted file as a CSV attachment, never cached; closed when sent (or abandoned)."""

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
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )
