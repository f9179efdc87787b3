"""Départements: registration on first use."""

from __future__ import annotations

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
