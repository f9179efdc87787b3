"""Liveness and readiness probes (the only routes without authentication)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from app.db import ping
from app.migrate import at_head

router = APIRouter(tags=["health"])


@router.get("/health", summary="The process is alive")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", summary="The database is reachable and its schema is at the latest migration")
def ready(request: Request) -> JSONResponse:
    engine = request.app.state.engine
    try:
        ping(engine)
    except SQLAlchemyError:
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    if not at_head(engine, request.app.state.settings):
        return JSONResponse({"status": "unavailable", "database": "migrations pending"}, status_code=503)
    return JSONResponse({"status": "ready", "database": "ok"})
