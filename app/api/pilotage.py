"""Pilotage over HTTP (JSON or CSV) for the Département's analysts."""

from __future__ import annotations

import csv
import io
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from app.api.deps import Authorized, SessionDep, SettingsDep
from app.errors import Unprocessable
from app.pilotage.orientation import FLAT_KEYS, orientation_indicator
from app.security.auth import Principal
from app.security.scopes import Scope
from app.services.episodes import pending_count
from app.settings import today

router = APIRouter(prefix="/api/v1/pilotage", tags=["pilotage"])


@router.get("/orientation", summary="Nouveaux entrants and their orientation delay (annex 4, indicators 1-2)")
def orientation(
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, Authorized(Scope.pilotage_read)],
    start: Annotated[date, Query(alias="from", description="First T0 day of the period")],
    end: Annotated[date, Query(alias="to", description="Last T0 day of the period")],
    as_of: Annotated[date | None, Query(description="Count the facts dated on or before (default: today)")] = None,
    departement: Annotated[str | None, Query(pattern=r"^(\d{3}|02[AB])$")] = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Any:
    if end < start:
        raise Unprocessable("`to` is before `from`.")
    if (end - start).days > 3660:
        raise Unprocessable("The period is longer than ten years.")
    day = as_of or today(settings)
    deps = principal.chosen_departements(departement)
    conn = session.connection()
    result = orientation_indicator(conn, deps, start, end, day)
    # Readers never recompute episodes (their writers do, right after their commit); say if some wait.
    result["episodes_a_recalculer"] = pending_count(conn)
    if format == "csv":
        out = io.StringIO()
        writer = csv.writer(out, delimiter=";")
        writer.writerow(["from", "to", "as_of", *FLAT_KEYS])
        writer.writerow([result["from"], result["to"], result["as_of"], *[result[k] for k in FLAT_KEYS]])
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8")
    return result
