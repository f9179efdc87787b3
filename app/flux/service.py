"""The received flux files as the shells list and show them: a page of a département's files, the latest
files, one file."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import FluxFile


def page(
    session: Session, departements: Iterable[str], status: str | None, limit: int, offset: int
) -> tuple[int, list[FluxFile]]:
    """The files of these départements (of this status, if given), newest first: how many in all, and the page."""
    query = select(FluxFile).where(FluxFile.departement_code.in_(sorted(departements)))
    if status:
        query = query.where(FluxFile.status == status)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(FluxFile.received_on.desc(), FluxFile.id.desc()).limit(limit).offset(offset))
    return total, list(rows)


def latest(session: Session, limit: int) -> list[FluxFile]:
    """The files received last (by id), every département."""
    return list(session.scalars(select(FluxFile).order_by(FluxFile.id.desc()).limit(limit)))


def get(session: Session, file_id: int, departements: Iterable[str] | None = None) -> FluxFile | None:
    """One file, or None when unknown (or, if `departements` is given, not of one of them)."""
    row = session.get(FluxFile, file_id)
    if row is None or (departements is not None and row.departement_code not in set(departements)):
        return None
    return row
