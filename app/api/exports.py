"""The download of a weekly file by France Travail's agents: the link (from the e-mail) is the credential.

No API key: the agents open the link in a browser. The token is long and random, only its keyed hash is
stored; a link expires (`PASSERELLE_EXPORT_LINK_DAYS`), may be single-use, may be revoked. Every use of a
known link, served or refused, is recorded (link, address, when); a file served is also recorded with the
other personal-data reads. A refused link (forged, expired, revoked, used) counts against its address's
limit of refused attempts (429 beyond) and is one audit event per link, address and minute with its count
(issue #23): a flood of forged links writes nothing per attempt. Messages are in French: France Travail's
agents read them.
"""

from __future__ import annotations

from typing import IO, Annotated, Any

import anyio
from fastapi import APIRouter, File, Form, Path, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse
from pydantic import ConfigDict, Field

from app.api import refusals
from app.api.deps import Authorized, SessionDep, SettingsDep, run_write
from app.clock import today
from app.db import get_engine, write_transaction
from app.errors import Unprocessable
from app.exports import links
from app.exports.publication import Publication
from app.exports.publish import PublishError, publish, token_hashes
from app.exports.weekly import Week, WeekError
from app.france_travail.return_file import check_filename, prepare, store
from app.kit.validation import InputModel
from app.security.auth import Principal
from app.security.scopes import Scope
from app.security.source import source_of

router = APIRouter(prefix="/api/v1/exports", tags=["exports"])


Token = Annotated[str, Path(min_length=20, max_length=100, pattern=r"^[A-Za-z0-9_-]+$", description="From the e-mail")]


@router.get(
    "/download/{token}",
    summary="Download a weekly file for France Travail (the link from the e-mail is the credential)",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/csv": {}}, "description": "The file (CSV ; UTF-8)"},
        403: {"description": "Unknown or forged link"},
        429: {"description": "Too many refused links from this address (`Retry-After`)"},
        410: {"description": "Expired, revoked or already used link"},
        409: {"description": "The stored file no longer matches its checksum: not served"},
    },
)
async def download(token: Token, request: Request, session: SessionDep, settings: SettingsDep) -> StreamingResponse:
    address = source_of(request)
    agent = (request.headers.get("user-agent") or "")[:200] or None
    hashed = token_hashes(settings, token)
    request_id = getattr(request.state, "request_id", None)

    def check() -> links.Checked:
        found = links.find_link(session, hashed)
        session.commit()  # the read ends before the file is decrypted; the use is recorded in a write of its own
        return links.check_link(settings, found)

    def record() -> str:
        with write_transaction(session):
            return links.record_use(session, checked, address, agent, request_id)

    checked = await anyio.to_thread.run_sync(check)
    # a token that names no link writes nothing: its refusal is counted below (issue #23)
    outcome = "unknown" if checked.outcome == "unknown" else await run_write(request, record)
    if outcome != "served":
        if checked.plain is not None:
            checked.plain.close()
        error = links.refusal(outcome)
        if outcome in links.REFUSED:  # the caller's link refused: counted against its address, recorded a minute
            wait = await refusals.count_against_source_off_loop(request)
            refusals.record(request.scope, error.status_code, error.code, principal_id=links.link_principal(checked),
                            action=links.download_action(checked), departement=links.link_departement(checked),
                            reason=outcome)  # fmt: skip
            if wait:
                raise refusals.too_many(wait)
        raise error
    assert checked.plain is not None
    return _stream_file(checked.plain, checked.export.filename)


# -- the Département's side: list, publish, revoke, return files (scopes exports:read / exports:run) --------

Departement = Annotated[str, Query(pattern=r"^(\d{3}|02[AB])$", description="Département, e.g. 055")]


def _export_out(listed: links.Listed) -> dict[str, Any]:
    row = listed.export
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
        "liens_actifs": len(listed.live),
        "liens_expiration": listed.live_until,
        "telechargements": listed.served,
    }


@router.get("", summary="The weekly files built, with their manifest, links and downloads")
def list_exports(
    session: SessionDep,
    principal: Annotated[Principal, Authorized(Scope.exports_read)],
    departement: Departement | None = None,
    week: Annotated[str | None, Query(pattern=r"^\d{4}-W\d{2}$")] = None,
) -> dict[str, Any]:
    deps = principal.chosen_departements(departement)
    return {"items": [_export_out(listed) for listed in links.list_exports(session, deps, week)]}


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
        422: {"description": "A week not over, or before the week of the département's first flux file"},
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
            return links.revoke_links(session, export_id, principal.departements)

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
    # The upload stays in its spool (on disk beyond 1 MB); read and validated whole as a stream before the
    # write lock is asked for, then matched and stored in batches under it (app.france_travail.return_file).
    check_filename(file.filename or "")  # before reading it (store checks it again)
    upload = await anyio.to_thread.run_sync(prepare, file.file)

    def work() -> dict[str, Any]:
        with write_transaction(session):
            report = store(session, settings, departement, file.filename or "retour.csv", upload, principal.id)
        return report.to_dict()

    return await run_write(request, work)


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
