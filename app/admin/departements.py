"""Départements: registration on first use, the ones known."""

from __future__ import annotations

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from app.models import Departement
from app.settings import Settings

# The codes of the 101 French départements, written as the service writes them (3 characters): INSEE's Code
# officiel géographique (COG, https://www.insee.fr/fr/information/2560452, "Départements"): 01 to 95 without
# 20, 2A and 2B (Corse), and the five overseas 971 Guadeloupe, 972 Martinique, 973 Guyane, 974 La Réunion,
# 976 Mayotte. 975 (Saint-Pierre-et-Miquelon), 977, 978 are collectivités d'outre-mer, not départements. No
# package pinned by the project carries the list; it changes by law only (the last change, 976 in 2011). A
# territory outside it is added with PASSERELLE_EXTRA_DEPARTEMENTS.
OFFICIAL_DEPARTEMENTS: frozenset[str] = frozenset(
    [f"{n:03d}" for n in range(1, 96) if n != 20] + ["02A", "02B"] + ["971", "972", "973", "974", "976"]
)


def unknown_departements(codes: list[str], settings: Settings) -> list[str]:
    """The codes neither in INSEE's list nor in PASSERELLE_EXTRA_DEPARTEMENTS, in order."""
    allowed = OFFICIAL_DEPARTEMENTS | set(settings.extra_departements)
    return sorted({code for code in codes if code not in allowed})


def not_a_departement(codes: list[str]) -> str:
    return (
        f"{', '.join(codes)}: not a département code of INSEE's list (001 to 095, 02A, 02B, 971 to 974, 976); "
        "a territory outside it is added with PASSERELLE_EXTRA_DEPARTEMENTS"
    )


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
