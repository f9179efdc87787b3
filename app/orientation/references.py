"""How an event sent by a platform names its person without our id: the NIR (and the birth date), or the
matricule and role the CAF/MSA files carry. One reading for the CSV import, `POST /api/v1/events` and the
events kept aside until their person arrives (app.orientation.arrivals), so a reference finds the same
persons whichever way it came."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Connection, select

from app.db import one_of
from app.errors import Unprocessable
from app.models import Person, PersonState
from app.persons.keys import key_hash
from app.security.nir import InvalidNir, NirLookup, normalize_nir
from app.settings import Settings

AMBIGUOUS = "several persons match; use the NIR"


@dataclass(frozen=True)
class PersonRef:
    """A person as a platform names them: the NIR (13 characters) and perhaps the birth date, or else the
    matricule and the role. Personal data: kept encrypted at rest, never logged."""

    nir13: str | None = None
    born: date | None = None
    matricule: str | None = None
    role: str | None = None

    @property
    def kind(self) -> str:
        return "nir" if self.nir13 else "matricule"

    def as_dict(self) -> dict[str, Any]:
        return {
            "nir13": self.nir13,
            "born": self.born.isoformat() if self.born else None,
            "matricule": self.matricule,
            "role": self.role,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PersonRef:
        born = data.get("born")
        return cls(
            data.get("nir13"), date.fromisoformat(born) if born else None, data.get("matricule"), data.get("role")
        )

    def key(self, settings: Settings) -> str:
        """The keyed hash the reference is stored under: the NIR's lookup hash (as `persons.nir_hash`), or a
        keyed hash of matricule and role."""
        if self.nir13:
            return "nir:" + NirLookup(settings.hmac_key).lookup_hash(self.nir13)
        return "mat:" + key_hash(settings.hmac_key, f"pending|{self.matricule}|{self.role}")


def reference(nir: str | None, born: date | None, matricule: str | None, role: str | None) -> PersonRef:
    """The reference a row gives (the NIR first). Raises ValueError naming what is wrong."""
    if nir:
        try:
            nir13 = normalize_nir(nir).nir13
        except InvalidNir as exc:
            raise ValueError(f"nir: {exc}") from exc
        return PersonRef(nir13=nir13, born=born)
    if matricule and matricule.strip() and role and role.strip():
        return PersonRef(matricule=matricule.strip(), role=role.strip())
    raise ValueError("each row needs nir (and date_naissance) or matricule and role")


def find_many(
    conn: Connection, settings: Settings, departement: str, refs: Sequence[PersonRef]
) -> dict[PersonRef, list[int]]:
    """The persons of the département each reference designates (none, one, or several: ambiguous), in two
    queries whatever the number of references. A NIR designates the persons with that NIR (and that birth
    date, when given); a matricule and role the persons any file gave them to."""
    lookup = NirLookup(settings.hmac_key)
    out: dict[PersonRef, list[int]] = {}
    by_hash = {lookup.lookup_hash(r.nir13): r for r in refs if r.nir13}
    pt = Person.__table__.c
    found_nir: dict[str, list[tuple[int, date | None]]] = defaultdict(list)
    if by_hash:
        rows = conn.execute(
            select(pt.id, pt.nir_hash, pt.date_naissance).where(
                pt.departement_code == departement, one_of(conn, pt.nir_hash, sorted(by_hash))
            )
        )
        for pid, nir_hash, born in rows:
            found_nir[nir_hash].append((int(pid), born))
    matricules = sorted({r.matricule for r in refs if not r.nir13 and r.matricule})
    found_mat: dict[tuple[str, str], set[int]] = defaultdict(set)
    if matricules:
        ps = PersonState.__table__.c
        rows = conn.execute(
            select(ps.person_id, ps.matricule, ps.role)
            .where(ps.departement_code == departement, one_of(conn, ps.matricule, matricules))
            .distinct()
        )
        for pid, matricule, role in rows:
            found_mat[(matricule, role)].add(int(pid))
    for ref in refs:
        if ref.nir13:
            candidates = found_nir.get(lookup.lookup_hash(ref.nir13), [])
            out[ref] = sorted({pid for pid, born in candidates if ref.born is None or born == ref.born})
        else:
            out[ref] = sorted(found_mat.get((ref.matricule or "", ref.role or ""), set()))
    return out


def find_person(conn: Connection, settings: Settings, departement: str, ref: PersonRef) -> int | None:
    """The one person a reference designates, None when nobody has it (yet); several is an error."""
    ids = find_many(conn, settings, departement, [ref])[ref]
    if len(ids) > 1:
        raise Unprocessable(AMBIGUOUS, [{"loc": ["body", "person"], "msg": AMBIGUOUS}])
    return ids[0] if ids else None
