"""What auditors and the DPO read: the record of every access to personal data (`access_records`), searched
by person, client, agent, period, action and outcome, and "who accessed this person" in one answer
(issue #14, auditor API). Always within the caller's départements; the auditor's own queries are recorded
too, like any other read."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from app.kit.csv import write_csv
from app.models import AccessRecord, ApiClient

CSV_COLUMNS = ("id", "at", "principal_id", "client_name", "agent_identifiant", "departement_code", "person_id",
               "action", "endpoint", "request_id", "found", "purpose", "source_address", "outcome",
               "detail")  # fmt: skip
MAX_LIMIT = 1000
BUSINESS_TIMEZONE = "Europe/Paris"  # the default of `PASSERELLE_BUSINESS_TIMEZONE`


@dataclass(frozen=True)
class AuditFilter:
    departements: tuple[str, ...]
    person_id: int | None = None
    client: str | None = None  # principal id (an API client's name, a person's subject, link:N, job:...)
    agent: str | None = None
    since: date | None = None
    until: date | None = None
    action: str | None = None  # exact, or a prefix ending in '.' or '*' ("ft.", "export.*")
    found: bool | None = None
    outcome: str | None = None  # ok, not_found, refused, rejected, error (app.audit.chain.OUTCOMES)
    timezone: str = BUSINESS_TIMEZONE  # of `since`, `until` and the times shown

    def query(self) -> Select[Any]:
        # `*` among the départements: the events of no one département (a file rejected before its département
        # was read, an anonymous caller's refusals, a key rotation)
        ar = AccessRecord
        q = select(ar).where(ar.departement_code.in_(self.departements))
        if self.person_id is not None:
            q = q.where(ar.person_id == self.person_id)
        if self.client:
            q = q.where(ar.principal_id == self.client)
        if self.agent:
            q = q.where(ar.agent_identifiant == self.agent)
        tz = ZoneInfo(self.timezone)  # days as the Département lives them (Europe/Paris), not UTC's
        if self.since:
            q = q.where(ar.at >= datetime.combine(self.since, time.min, tz).astimezone(UTC))
        if self.until:
            q = q.where(ar.at < datetime.combine(self.until + timedelta(days=1), time.min, tz).astimezone(UTC))
        if self.action:
            prefix = self.action.rstrip("*")
            q = (
                q.where(ar.action.startswith(prefix))
                if self.action.endswith((".", "*"))
                else q.where(ar.action == self.action)
            )
        if self.found is not None:
            q = q.where(ar.found.is_(self.found))
        if self.outcome is not None:
            q = q.where(ar.outcome == self.outcome)
        return q


def local_time(at: datetime, timezone: str = BUSINESS_TIMEZONE) -> str:
    """An event's time in the Département's timezone, with its offset (2026-12-06T14:05:00+01:00)."""
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return at.astimezone(ZoneInfo(timezone)).isoformat(timespec="seconds")


def shown_time(at: datetime | str, timezone: str = BUSINESS_TIMEZONE) -> str:
    """An event's time as the Département's staff read it, in its timezone: jj/mm/aaaa hh:mm (the CSV, the
    terminal; JSON keeps `local_time`'s ISO form with its offset). An ISO string is taken with its offset."""
    moment = datetime.fromisoformat(at) if isinstance(at, str) else at
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.astimezone(ZoneInfo(timezone)).strftime("%d/%m/%Y %H:%M")


CLIENT_PREFIX = "client:"


def client_names(session: Session, principal_ids: Any) -> dict[str, str]:
    """The API clients' names of the principal ids `client:N` among those given (a deleted client: absent)."""
    ids = {int(p[len(CLIENT_PREFIX) :]) for p in principal_ids if p and p.startswith(CLIENT_PREFIX)
           and p[len(CLIENT_PREFIX) :].isdigit()}  # fmt: skip
    if not ids:
        return {}
    rows = session.execute(select(ApiClient.id, ApiClient.name).where(ApiClient.id.in_(ids)))
    return {f"{CLIENT_PREFIX}{i}": name for i, name in rows}


def row_dict(r: AccessRecord, timezone: str = BUSINESS_TIMEZONE, names: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "id": r.id,
        "at": local_time(r.at, timezone),
        "principal_id": r.principal_id,
        "client_name": (names or {}).get(r.principal_id),  # the API client's name beside its id (client:N)
        "agent_identifiant": r.agent_identifiant,
        "departement_code": r.departement_code,
        "person_id": r.person_id,
        "action": r.action,
        "endpoint": r.endpoint,
        "request_id": r.request_id,
        "found": r.found,
        "purpose": r.purpose,
        "source_address": r.source_address,
        "outcome": r.outcome,
        "detail": r.detail,  # JSON text: counts, file ids, a refusal's status and reason; never personal data
    }


def search(session: Session, criteria: AuditFilter, limit: int = 100, offset: int = 0) -> dict[str, Any]:
    q = criteria.query()
    total = session.scalar(select(func.count()).select_from(q.subquery())) or 0
    rows = session.scalars(
        q.order_by(AccessRecord.at.desc(), AccessRecord.id.desc()).limit(min(limit, MAX_LIMIT)).offset(offset)
    )
    records = list(rows)
    names = client_names(session, {r.principal_id for r in records})
    items = [row_dict(r, criteria.timezone, names) for r in records]
    return {"total": int(total), "limit": min(limit, MAX_LIMIT), "offset": offset, "items": items}


def who_accessed(
    session: Session, departements: tuple[str, ...], person_id: int, timezone: str = BUSINESS_TIMEZONE
) -> dict[str, Any]:
    """Every client and agent that read or changed the person's data: how often, first and last time, what."""
    ar = AccessRecord
    rows = session.execute(
        select(
            ar.principal_id,
            ar.agent_identifiant,
            func.count(),
            func.min(ar.at),
            func.max(ar.at),
        )
        .where(ar.person_id == person_id, ar.departement_code.in_(departements))
        .group_by(ar.principal_id, ar.agent_identifiant)
        .order_by(func.max(ar.at).desc())
    ).all()
    actions: dict[tuple[str, str | None], set[str]] = {}
    for principal, agent, action in session.execute(
        select(ar.principal_id, ar.agent_identifiant, ar.action)
        .where(ar.person_id == person_id, ar.departement_code.in_(departements))
        .distinct()
    ):
        actions.setdefault((principal, agent), set()).add(action)
    names = client_names(session, {principal for principal, *_rest in rows})
    return {
        "person_id": person_id,
        "accessors": [
            {
                "principal_id": principal,
                "client_name": names.get(principal),
                "agent_identifiant": agent,
                "accesses": int(n),
                "first": local_time(first, timezone),
                "last": local_time(last, timezone),
                "actions": sorted(actions.get((principal, agent), ())),
            }
            for principal, agent, n, first, last in rows
        ],
    }


def _cell(column: str, value: Any) -> str:
    """A cell as French Excel reads it: oui/non, the time in the Département's timezone as jj/mm/aaaa hh:mm
    (the item's own time, already in that timezone), empty for nothing."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "oui" if value else "non"
    if column == "at":
        moment = datetime.fromisoformat(str(value))
        return moment.strftime("%d/%m/%Y %H:%M")  # its own wall-clock time, the offset it was given
    return str(value)


def who(item: dict[str, Any]) -> str:
    """The principal as the terminal shows it: the client's name beside its id (`plateforme (client:3)`)."""
    name = item.get("client_name")
    return f"{name} ({item['principal_id']})" if name else str(item["principal_id"])


def to_csv(items: list[dict[str, Any]]) -> str:
    """`;`, a BOM for French Excel, CRLF: written as the weekly files are (app.exports.weekly.write_csv);
    times in the Département's timezone (the items' own) as jj/mm/aaaa hh:mm, booleans oui/non, the API
    client's name beside its id."""

    out = io.BytesIO()
    rows = ([_cell(c, item[c]) for c in CSV_COLUMNS] for item in items)
    write_csv(CSV_COLUMNS, rows, out)
    return out.getvalue().decode("utf-8")
