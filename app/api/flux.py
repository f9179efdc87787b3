"""The CAF/MSA flux over HTTP: upload a file (applied all or nothing), list files, read a file's report."""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.api.deps import Authorized, FileId, IsoDate, SessionDep, SettingsDep, run_write
from app.clock import today
from app.errors import NotFound, Unprocessable
from app.flux import service as flux_files
from app.flux.freshness import freshness, overall
from app.flux.loader import IngestOptions, IngestReport, ingest_file
from app.kit.files import private_dir
from app.kit.validation import control_character_problem
from app.models import FluxFile
from app.security.auth import Principal
from app.security.scopes import Scope

router = APIRouter(prefix="/api/v1/flux", tags=["flux"])


class FluxFileOut(BaseModel):
    id: int
    departement: str | None
    filename: str
    status: str
    error_code: str | None
    error: str | None
    organisme: str | None
    type_flux: str | None
    created_at_caf: datetime | None
    received_on: date
    initial_stock: bool
    foyers: int
    persons: int
    warnings: int
    rejected_records: int
    duration_ms: int | None
    size_bytes: int


class FluxFileDetail(FluxFileOut):
    report: dict[str, Any]


class FluxPage(BaseModel):
    total: int
    items: list[FluxFileOut]


def _out(row: FluxFile) -> dict[str, Any]:
    return {
        "id": row.id,
        "departement": row.departement_code,
        "filename": row.filename,
        "status": row.status,
        "error_code": row.error_code,
        "error": row.error,
        "organisme": " ".join(x for x in (row.fonorg, row.numorg) if x) or None,
        "type_flux": row.type_flux,
        "created_at_caf": row.created_at_caf,
        "received_on": row.received_on,
        "initial_stock": row.initial_stock,
        "foyers": row.foyers,
        "persons": row.persons,
        "warnings": row.warnings,
        "rejected_records": row.rejected_records,
        "duration_ms": row.duration_ms,
        "size_bytes": row.size_bytes,
    }


@router.post(
    "",
    summary="Upload a CAF/MSA flux file; it is applied whole or not at all",
    responses={
        201: {"description": "Applied: the ingestion report"},
        200: {"description": "Already ingested: nothing changed"},
        422: {"description": "Rejected: nothing applied; the report says where and why"},
    },
)
async def upload_flux(
    request: Request,
    settings: SettingsDep,
    principal: Annotated[Principal, Authorized(Scope.flux_write)],
    file: Annotated[UploadFile, File(description="VRSB0801 XML, plain or gzip")],
    received_on: Annotated[
        IsoDate | None,
        Form(description="Date the Département received it, never in the future (default: today, Europe/Paris)"),
    ] = None,
    initial_stock: Annotated[bool, Form(description="First load of the département (monthly or reprise file)")] = False,
    departement: Annotated[
        str | None,
        Form(pattern=r"^(\d{3}|02[AB])$", description="Expected département (default: the caller's only one)"),
    ] = None,
) -> JSONResponse:
    problem = control_character_problem(file.filename or "")
    if problem:
        raise Unprocessable(f"file: the file name {problem}", [{"loc": ["body", "file"], "msg": problem}])
    if departement is None:
        if len(principal.departements) != 1:
            raise Unprocessable("departement is required: this client is granted several départements.")
        departement = next(iter(principal.departements))
    elif departement not in principal.departements:
        raise NotFound("No such département.")
    name = (file.filename or "upload.xml").replace("/", "_")[-200:]

    def apply() -> IngestReport:
        # The copy and the ingestion run in the writers' threads: a file waits for the write lock there,
        # never holding a thread readers need (app.api.deps.run_write).
        incoming = private_dir(settings.data_dir / "incoming")
        with tempfile.NamedTemporaryFile(dir=incoming, suffix="-" + name, delete=False) as tmp:
            shutil.copyfileobj(file.file, tmp, 1 << 20)
            tmp_path = tmp.name
        path = Path(tmp_path)
        try:
            options = IngestOptions(
                received_on=received_on or today(settings),
                initial_stock=initial_stock,
                departement=departement,
                ingested_by=principal.id,
                display_name=name,
            )
            return ingest_file(request.app.state.engine, settings, path, options)  # IngestInputError: 422
        finally:
            path.unlink(missing_ok=True)

    report = await run_write(request, apply)
    body = public_report(report.to_dict())
    if report.status == "rejected":
        where = f" ({report.error_position})" if report.error_position else ""
        raise Unprocessable(f"The file {name} was rejected{where}: {report.error}", body, code="flux_rejected")
    return JSONResponse(content=_jsonable(body), status_code=201 if report.status == "applied" else 200)


def public_report(report: dict[str, Any]) -> dict[str, Any]:
    """A report as the API shows it: never a path on the server, but the quarantined file's id (its name in
    the quarantine directory, for the operator)."""
    shown = {k: v for k, v in report.items() if k != "quarantine_path"}
    path = report.get("quarantine_path")
    shown["quarantine_id"] = Path(path).name if path else None
    return shown


def _jsonable(data: Any) -> Any:
    return json.loads(json.dumps(data, default=str))


@router.get("", response_model=FluxPage, summary="Received flux files, newest first")
def list_flux(
    session: SessionDep,
    principal: Annotated[Principal, Authorized(Scope.flux_write)],
    status: Annotated[str | None, Query(pattern="^(applied|rejected)$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> FluxPage:
    total, rows = flux_files.page(session, principal.departements, status, limit, offset)
    return FluxPage(total=total, items=[FluxFileOut(**_out(r)) for r in rows])


class FreshnessLine(BaseModel):
    departement: str
    organisme: str | None
    dernier_fichier_recu: date | None
    jours_ouvres_depuis: int | None
    status: Literal["ok", "silencieux"]
    message: str | None


class FreshnessOut(BaseModel):
    as_of: date
    seuil_jours_ouvres: int
    status: Literal["ok", "silencieux"]
    items: list[FreshnessLine]


@router.get(
    "/freshness",
    response_model=FreshnessOut,
    summary="Is a CAF or an MSA silent? (always 200: read `status`)",
    description="For each département of the caller and each organisme (FONORG: CAF, MSA) that sent beneficiary "
    "files, the last one applied and the working days since, up to as_of (weekends and French public holidays "
    "of the département not counted). `silencieux` beyond PASSERELLE_PILOTAGE_GAP_DAYS working days, or for a "
    "département no beneficiary file ever came to; the overall `status` is `silencieux` if any line is. Always "
    "200 when computed: a monitoring check reads `status` (`/ready` stays about the service).",
)
def flux_freshness(
    session: SessionDep,
    settings: SettingsDep,
    # the dashboard's figure, for a monitoring host: no power to upload files (review of #26)
    principal: Annotated[Principal, Authorized(Scope.pilotage_read)],
    as_of: Annotated[IsoDate | None, Query(description="Files received on or before (default: today)")] = None,
) -> FreshnessOut:
    day = as_of or today(settings)
    lines = freshness(session.connection(), principal.departements, day, settings.pilotage_gap_days)
    return FreshnessOut(
        as_of=day,
        seuil_jours_ouvres=settings.pilotage_gap_days,
        status=overall(lines),
        items=[FreshnessLine(**f.as_json(), message=f.message() if f.silent else None) for f in lines],
    )


@router.get("/{file_id}", response_model=FluxFileDetail, summary="One flux file and its ingestion report")
def get_flux(
    file_id: FileId, session: SessionDep, principal: Annotated[Principal, Authorized(Scope.flux_write)]
) -> FluxFileDetail:
    row = flux_files.get(session, file_id, principal.departements)
    if row is None:
        raise NotFound("No such flux file.")
    return FluxFileDetail(**_out(row), report=public_report(row.report or {}))
