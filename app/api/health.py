"""Liveness and readiness probes (the only routes without authentication)."""

from __future__ import annotations

from typing import Literal

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from app.db import audit_journal_problem, ping
from app.migrate import at_head
from app.settings import Settings

router = APIRouter(tags=["health"])

# Readiness checks run in threads of their own: a database that never answers holds at most these few,
# never the request thread pool (the check's thread ends at the driver's connect timeout).
_ready_threads = anyio.CapacityLimiter(4)


class Health(BaseModel):
    """What `/health` answers: always this, while the process runs."""

    model_config = ConfigDict(json_schema_extra={"example": {"status": "ok"}})
    status: Literal["ok"]


class Readiness(BaseModel):
    """What `/ready` answers: 200 ready, or 503 and why not (never a host, a path or a credential)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"status": "ready", "database": "ok"}, {"status": "unavailable", "database": "unreachable"}]
        }
    )
    status: Literal["ready", "unavailable"]
    database: str = Field(
        description="`ok`, or why not: `unreachable`, `migrations pending`, `audit journal missing`, "
        "`no answer within N s`"
    )


@router.get("/health", summary="The process is alive", response_model=Health)
def health() -> dict[str, str]:
    return {"status": "ok"}


def _check(engine: Engine, settings: Settings) -> str | None:
    """None when ready, or why not."""
    try:
        ping(engine)
    except SQLAlchemyError:
        return "unreachable"
    if not at_head(engine, settings):
        return "migrations pending"
    if audit_journal_problem(engine) is not None:  # every read would be refused: it is recorded there
        return "audit journal missing"  # its path is for the operator (`passerelle audit verify`), not this probe
    return None


@router.get(
    "/ready",
    summary="The database answers, its schema is at the latest migration and its audit journal is there "
    "(answers within 2 s, 503 otherwise)",
    responses={
        200: {"model": Readiness, "description": "Ready: the service can answer requests"},
        503: {
            "model": Readiness,
            "description": "Not ready (`status` `unavailable`): `database` says why; a load balancer sends "
            "nothing here until it answers 200 again",
            "content": {"application/json": {"example": {"status": "unavailable", "database": "unreachable"}}},
        },
    },
)
async def ready(request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    limit = settings.ready_timeout_seconds
    problem: str | None
    try:
        with anyio.fail_after(limit):
            problem = await anyio.to_thread.run_sync(
                _check, request.app.state.engine, settings, abandon_on_cancel=True, limiter=_ready_threads
            )
    except TimeoutError:
        problem = f"no answer within {limit:g} s"
    if problem:
        return JSONResponse({"status": "unavailable", "database": problem}, status_code=503)
    return JSONResponse({"status": "ready", "database": "ok"})
