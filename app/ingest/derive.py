"""What can be computed from one record alone: identity keys, the NIR's hash and ciphertext, the state values
and their fingerprint. Pure functions of the record and the keys."""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any

from app.ingest.records import FoyerRecord, PersonRecord
from app.security.nir import NirProtector


@lru_cache(maxsize=65536)
def _norm(value: str | None) -> str:
    """Names compared without case, accents, spaces or punctuation (identity key of last resort)."""
    if not value:
        return ""
    decomposed = unicodedata.normalize("NFKD", value.upper())
    return "".join(c for c in decomposed if c.isalnum())


# -- state of a person in one file ------------------------------------------------------------

STATE_COLUMNS = (
    "present",
    "absence_reason",
    "fonorg",
    "numorg",
    "matricule",
    "numdemrsa",
    "dtdemrsa",
    "role",
    "etat",
    "sdd",
    "sdd_entrant",
    "suspension_versement_motifs",
    "suspension_versement_since",
    "suspension_droit_motifs",
    "suspension_droit_since",
    "closure_motif",
    "closure_date",
    "transfer_in_from",
    "transfer_in_date",
    "transfer_out_to",
    "transfer_out_date",
    "numcom",
    "codepos",
    "nomcom",
    "adresse",
    "sitfam",
    "ddnatdro",
    "idassedic",
)
# What decides whether a new state row is needed (sdd_entrant is a transient flag of daily files).
FINGERPRINT_COLUMNS = tuple(c for c in STATE_COLUMNS if c not in ("sdd_entrant",))
ROW_COLUMNS = (
    "person_id",
    "file_id",
    "departement_code",
    "received_on",
    "file_created_at",
    "seq",
    "type_flux",
    *STATE_COLUMNS,
    "fingerprint",
)


def _fingerprint(values: dict[str, Any]) -> str:
    # repr() of a tuple of str/bool/date/None is stable across runs and computed in C.
    raw = repr(tuple([values[c] for c in FINGERPRINT_COLUMNS]))
    return hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()


def _earliest(susps: Sequence[Any]) -> tuple[str | None, date | None]:
    if not susps:
        return None, None
    motifs = ",".join(sorted({s.motif for s in susps if s.motif}))[:60] or None
    dates = [s.since for s in susps if s.since is not None]
    return motifs, (min(dates) if dates else None)


def state_values(foyer: FoyerRecord, person: PersonRecord) -> dict[str, Any]:
    a = foyer.address
    sv_motifs, sv_since = _earliest(foyer.suspensions_versement)
    sd_motifs, sd_since = _earliest(foyer.suspensions_droit)
    street = " ".join(x for x in (a.numvoie, a.typevoie, a.nomvoie) if x)
    adresse = " / ".join(x for x in (street, a.complement, a.lieudit) if x)[:200] or None
    values: dict[str, Any] = {
        "present": True,
        "absence_reason": None,
        "fonorg": foyer.fonorg,
        "numorg": foyer.numorg,
        "matricule": foyer.matricule,
        "numdemrsa": foyer.numdemrsa,
        "dtdemrsa": foyer.dtdemrsa,
        "role": person.role,
        "etat": foyer.etat,
        "sdd": person.sdd,
        "sdd_entrant": person.sdd_entrant,
        "suspension_versement_motifs": sv_motifs,
        "suspension_versement_since": sv_since,
        "suspension_droit_motifs": sd_motifs,
        "suspension_droit_since": sd_since,
        "closure_motif": foyer.closure_motif,
        "closure_date": foyer.closure_date,
        "transfer_in_from": foyer.transfer_in_from,
        "transfer_in_date": foyer.transfer_in_date,
        "transfer_out_to": foyer.transfer_out_to,
        "transfer_out_date": foyer.transfer_out_date,
        "numcom": a.numcom,
        "codepos": a.codepos,
        "nomcom": a.nomcom,
        "adresse": adresse,
        "sitfam": foyer.sitfam,
        "ddnatdro": foyer.ddnatdro,
        "idassedic": person.idassedic,
    }
    values["fingerprint"] = _fingerprint(values)
    return values


def absent_values(previous: dict[str, Any], reason: str) -> dict[str, Any]:
    values = dict.fromkeys(STATE_COLUMNS)
    values.update(
        present=False,
        absence_reason=reason,
        fonorg=previous["fonorg"],
        numorg=previous["numorg"],
        matricule=previous["matricule"],
        numdemrsa=previous["numdemrsa"],
        role=previous["role"],
    )
    values["fingerprint"] = _fingerprint(values)
    return values


def key_hash(hmac_key: bytes, raw: str) -> str:
    """The stored form of an identity key: 128 bits of HMAC-SHA256 (collision-free at any realistic
    population, half the index of the full digest)."""
    return hmac.digest(hmac_key, raw.encode(), "sha256")[:16].hex()


def matricule_key_text(fonorg: str | None, numorg: str | None, matricule: str, role: str) -> str:
    """organisme + matricule + role, as hashed into the `matricule` key (also used to search by it)."""
    return f"mat|{fonorg}|{numorg}|{matricule}|{role}"


@dataclass(frozen=True, slots=True)
class Derived:
    keys: list[tuple[str, str]]  # (kind, 128-bit HMAC hex)
    nir_hash: str | None
    nir_encrypted: str | None
    state: dict[str, Any]


class Deriver:
    def __init__(self, hmac_key: bytes, encryption_keys: list[tuple[str, bytes]]) -> None:
        self.hmac_key = hmac_key
        self.protector = NirProtector(encryption_keys, hmac_key)

    def _h(self, raw: str) -> str:
        return key_hash(self.hmac_key, raw)

    def keys(self, foyer: FoyerRecord, p: PersonRecord) -> list[tuple[str, str]]:
        """Identity keys, strongest first: NIR, organisme + matricule + role, demand number + role, identity."""
        keys: list[tuple[str, str]] = []
        if p.nir13:
            keys.append(("nir", self._h(f"nir|{p.nir13}")))
        if foyer.matricule and p.role:
            keys.append(("matricule", self._h(matricule_key_text(foyer.fonorg, foyer.numorg, foyer.matricule, p.role))))
        if foyer.numdemrsa and p.role:
            keys.append(("numdemrsa", self._h(f"dem|{foyer.numdemrsa}|{p.role}")))
        if p.nom and p.prenom and p.date_naissance:
            keys.append(("identity", self._h(f"id|{_norm(p.nom)}|{_norm(p.prenom)}|{p.date_naissance}")))
        return keys

    def derive(self, foyer: FoyerRecord, p: PersonRecord) -> Derived:
        return Derived(
            keys=self.keys(foyer, p),
            nir_hash=self.protector.lookup_hash(p.nir13) if p.nir13 else None,
            nir_encrypted=self.protector.encrypt(p.nir13) if p.nir13 else None,
            state=state_values(foyer, p),
        )
