"""The Département's dashboard in French (issue #15): `/tableau-de-bord?mois=AAAA-MM&as_of=AAAA-MM-JJ`, a page
rendered on the server from the pilotage tables (the API's numbers), for people (scope `pilotage:read`)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from app.api.deps import Authorized, SessionDep, SettingsDep
from app.errors import Unprocessable
from app.pilotage import dashboard
from app.pilotage.tables import Period
from app.security.auth import Principal
from app.security.scopes import Scope
from app.settings import today

router = APIRouter(tags=["tableau de bord"])


@router.get(
    "/tableau-de-bord",
    response_class=HTMLResponse,
    summary="Le tableau de bord du Département (HTML, en français)",
)
def tableau_de_bord(
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, Authorized(Scope.pilotage_read)],
    mois: Annotated[
        str | None, Query(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="AAAA-MM (défaut : ce mois)")
    ] = None,
    as_of: Annotated[date | None, Query(description="Faits connus à cette date (défaut : aujourd'hui)")] = None,
    departement: Annotated[str | None, Query(pattern=r"^(\d{3}|02[AB])?$")] = None,
) -> HTMLResponse:
    day = as_of or today(settings)
    month = Period.parse(mois or day.strftime("%Y-%m"))
    if month.start > day:
        raise Unprocessable(f"Le mois {month.label} commence après le {day.strftime('%d/%m/%Y')}.")
    deps = principal.chosen_departements(departement or None)
    board = dashboard.build(session.connection(), deps, month, day, settings.pilotage_target_15_days)
    html = dashboard.render(
        board, sorted(principal.departements), departement or None, settings.pilotage_target_15_days
    )
    return HTMLResponse(html)
