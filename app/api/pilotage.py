"""Pilotage over HTTP (JSON or CSV) for the Département's analysts."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import Connection, select

from app.api.deps import Authorized, IsoDate, SessionDep, SettingsDep, aggregate_read
from app.clock import today
from app.db import one_of
from app.errors import NotConfigured, Unprocessable
from app.models import Person
from app.orientation.episodes import pending_count
from app.persons import repository as person_service
from app.pilotage import absences, extract
from app.pilotage.indicator import orientation_indicator
from app.pilotage.tables import (
    DIMENSIONS,
    TABLES,
    TITLES,
    Period,
    PeriodError,
    commune_table,
    compute,
    filename,
    month_of,
    to_csv,
)
from app.security.auth import Principal
from app.security.scopes import Scope
from app.settings import ConfigurationError

router = APIRouter(prefix="/api/v1/pilotage", tags=["pilotage"])


@router.get("/orientation", summary="Nouveaux entrants and their orientation delay (annex 4, indicators 1-2)")
def orientation(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, Authorized(Scope.pilotage_read)],
    start: Annotated[IsoDate, Query(alias="from", description="First T0 day of the period")],
    end: Annotated[IsoDate, Query(alias="to", description="Last T0 day of the period")],
    as_of: Annotated[IsoDate | None, Query(description="Count the facts dated on or before (default: today)")] = None,
    departement: Annotated[str | None, Query(pattern=r"^(\d{3}|02[AB])$")] = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
    locale: Annotated[Literal["fr", "c"], Query(description="CSV: fr (decimal comma, jj/mm/aaaa) or c")] = "fr",
) -> Any:
    if end < start:
        raise Unprocessable("`to` is before `from`.")
    if (end - start).days > 3660:
        raise Unprocessable("The period is longer than ten years.")
    day = as_of or today(settings)
    deps = principal.chosen_departements(departement)
    if format == "csv":  # the same figures as the table delais-orientation, in long form (issue #15)
        period = Period.days(start, end)

        def csv_table(conn: Connection) -> tuple[dict[str, str], Any]:
            names, territories = communes(settings, conn, deps)
            return names, compute(conn, "delais-orientation", deps, period, day, DIMENSIONS, territories)

        names, table = aggregate_read(request, session, csv_table)
        return Response(
            to_csv(table, locale, names),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename(table)}"'},
        )

    def indicator(conn: Connection) -> dict[str, Any]:
        result = orientation_indicator(conn, deps, start, end, day)
        # Readers never recompute episodes (their writers do, right after their commit); say if some wait.
        result["episodes_a_recalculer"] = pending_count(conn)
        return result

    return aggregate_read(request, session, indicator)


TableName = Literal[
    "nouveaux-entrants", "delais-orientation", "absents-rdv", "transmission", "stock-oarsa", "completude-volet3",
    "statut-france-travail", "contrats-engagement", "delai-legal",
]  # fmt: skip
Dimension = Literal[
    "organisme", "structure", "type_parcours", "accompagnement_global", "caf_msa", "commune", "territoire",
    "tranche_age", "sexe", "role",
]  # fmt: skip


PERIOD_PATTERN = r"^\d{4}(-(0[1-9]|1[0-2]|[Ww]\d{2}|[TtQq][1-4]))?$"


def _period(periode: str | None, start: date | None, end: date | None, day: date) -> Period:
    """The period asked; none at all: the current month."""
    if periode is None and start is None and end is None:
        periode = month_of(day)
    try:
        return Period.parse(periode, start, end)
    except PeriodError as exc:
        raise Unprocessable(str(exc), [{"loc": ["query", "periode"], "msg": str(exc)}]) from None


def communes(settings: Any, conn: Any, departements: list[str]) -> tuple[dict[str, str], dict[str, str] | None]:
    return commune_table(settings, conn, departements)  # CommunesFileError: 503 communes_file_invalid


@router.get("/tables", summary="The pilotage tables: names and titles")
def list_tables(principal: Annotated[Principal, Authorized(Scope.pilotage_read)]) -> dict[str, Any]:
    return {"tables": [{"nom": name, "titre": TITLES[name]} for name in TABLES]}


@router.get(
    "/tables/{table}",
    summary="A pilotage table for a period and an as-of date, with its breakdowns (JSON, or CSV in long form)",
)
def pilotage_table(
    request: Request,
    table: TableName,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, Authorized(Scope.pilotage_read)],
    periode: Annotated[
        str | None,
        Query(
            pattern=PERIOD_PATTERN,
            description="2024-03 (month), 2024-W10, 2024-T1, 2024; or from and to (default: the current month)",
        ),
    ] = None,
    start: Annotated[IsoDate | None, Query(alias="from", description="First day (custom period)")] = None,
    end: Annotated[IsoDate | None, Query(alias="to", description="Last day (custom period)")] = None,
    as_of: Annotated[IsoDate | None, Query(description="Count the facts dated on or before (default: today)")] = None,
    departement: Annotated[str | None, Query(pattern=r"^(\d{3}|02[AB])$")] = None,
    par: Annotated[list[Dimension] | None, Query(description="Breakdowns (default: all)")] = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
    locale: Annotated[Literal["fr", "c"], Query(description="CSV: fr (decimal comma, jj/mm/aaaa) or c")] = "fr",
) -> Any:
    day = as_of or today(settings)
    period = _period(periode, start, end, today(settings))
    deps = principal.chosen_departements(departement)

    def work(conn: Connection) -> tuple[dict[str, str], Any]:
        names, territories = communes(settings, conn, deps)
        dims = tuple(par or DIMENSIONS)
        return names, compute(conn, table, deps, period, day, dims, territories, settings.pilotage_gap_days)

    names, result = aggregate_read(request, session, work)
    if format == "csv":
        return Response(
            to_csv(result, locale, names),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename(result)}"'},
        )
    return result.as_dict(names)


@router.get(
    "/extract",
    summary="The pseudonymised extract for analysis: one line per entry episode, streamed (CSV or JSON lines)",
    responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}},
)
def pilotage_extract(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, Authorized(Scope.pilotage_read)],
    periode: Annotated[
        str | None, Query(pattern=PERIOD_PATTERN, description="2024-03, 2024-W10, 2024-T1, 2024 (default: this month)")
    ] = None,
    start: Annotated[IsoDate | None, Query(alias="from")] = None,
    end: Annotated[IsoDate | None, Query(alias="to")] = None,
    as_of: Annotated[IsoDate | None, Query()] = None,
    departement: Annotated[str | None, Query(pattern=r"^(\d{3}|02[AB])$")] = None,
    format: Annotated[Literal["csv", "jsonl"], Query()] = "csv",
) -> StreamingResponse:
    day = as_of or today(settings)
    period = _period(periode, start, end, today(settings))
    deps = principal.chosen_departements(departement)
    try:
        key = settings.extract_key_bytes
    except ConfigurationError as exc:
        raise NotConfigured(str(exc), code="extract_not_configured") from None
    # the extract is a read of personal data (pseudonymised): one audit event per département, before it is sent
    for dep in deps:
        person_service.audit_read(request, session, principal, "pilotage.extract", None, dep, found=True)
    session.commit()
    engine = request.app.state.engine

    def stream() -> Any:
        with engine.connect() as conn:
            items = extract.rows(conn, key, deps, period, day)
            yield from (extract.as_csv(items) if format == "csv" else extract.as_jsonl(items))

    name = f"extrait_pseudonymise_{period.label}_au_{day.isoformat()}.{format}"
    media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
    return StreamingResponse(
        stream(), media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


@router.get(
    "/absents-rdv/personnes",
    summary="The RDVs (orientation and accompaniment) missed or excused in a period, per person, to check a "
    "sanction file: nothing automatic, nothing sent (JSON or CSV)",
)
def missed_rdvs(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, Authorized(Scope.persons_read)],
    periode: Annotated[
        str | None,
        Query(pattern=PERIOD_PATTERN, description="RDVs dated in 2024-03, 2024-W10, 2024-T1, 2024 (default: now)"),
    ] = None,
    start: Annotated[IsoDate | None, Query(alias="from", description="First RDV day (custom period)")] = None,
    end: Annotated[IsoDate | None, Query(alias="to", description="Last RDV day (custom period)")] = None,
    as_of: Annotated[IsoDate | None, Query(description="Events dated on or before (default: today)")] = None,
    departement: Annotated[str | None, Query(pattern=r"^(\d{3}|02[AB])$")] = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Any:
    day = as_of or today(settings)
    period = _period(periode, start, end, today(settings))
    deps = principal.chosen_departements(departement)
    items = absences.missed_rdvs(session.connection(), deps, period, day)
    # a read of named persons, like the worklist: one audit row per person listed, before the answer is sent
    ids = sorted({m.person_id for m in items})
    persons = list(session.scalars(select(Person).where(one_of(session.connection(), Person.id, ids))))
    person_service.audit_reads(request, session, principal, "pilotage.absents_rdv", persons)
    session.commit()
    if format == "csv":
        name = f"absents_rdv_personnes_{period.label}_au_{day.isoformat()}.csv"
        return StreamingResponse(
            absences.as_csv(items),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return {
        "periode": period.label,
        "du": period.start.isoformat(),
        "au": period.end.isoformat(),
        "as_of": day.isoformat(),
        "departements": deps,
        "total": len(items),
        "items": [absences.as_dict(m) for m in items],
    }
