"""Départements: registration on first use, the ones known."""

from __future__ import annotations

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from app.models import Departement


def ensure_departement(session: Session, code: str, name: str | None = None) -> Departement:
    dep = session.get(Departement, code)
    if dep is None:
        dep = Departement(code=code, name=name)
        session.add(dep)
        session.flush()
    elif name and dep.name != name:
        dep.name = name
    return dep


def known_codes(conn: Session | Connection) -> list[str]:
    """The codes of the registered départements, in order."""
    return list(conn.execute(select(Departement.code).order_by(Departement.code)).scalars())


def list_departements(session: Session) -> list[Departement]:
    """The registered départements, in the order of their codes."""
    return list(session.scalars(select(Departement).order_by(Departement.code)))
