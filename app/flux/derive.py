"""What can be computed from one foyer record alone, before any database: each person's identity keys, the
NIR's lookup hash and ciphertext, the state the file shows and its fingerprint.

`Deriver.prepare` turns a `FoyerRecord` into a `Prepared` foyer: plain tuples, strings, numbers and
booleans only, dates as ISO text. That is all the loader needs, and it is what crosses from the reading
process to the loader for big files: `marshal` sends such values ~10 × cheaper than pickling the typed
records (measured in bench/BENCHMARKS.md, run 7). The loader computes what only it can use well: the
fingerprint (it has the time; the reading process is the longer half) and the NIR's ciphertext (only for
a new person or a person whose NIR becomes known: a monthly file repeating everyone encrypts nothing).
"""

from __future__ import annotations

import hashlib
import operator
from datetime import date
from typing import Any, NamedTuple, cast

from sqlalchemy import String

from app.flux.reader import REJECT_FOYER, REJECT_PERSON
from app.flux.records import BRSA_ROLES, MISSING_ADMINISTRATIVE, MISSING_PRESTATION, FoyerRecord, Suspension
from app.models.flux import FoyerEvent, Person, PersonState
from app.persons.keys import identity_key_text, identity_secret, matricule_key_text
from app.security.nir import NirLookup

# -- state of a person in one file ------------------------------------------------------------

# The order of a state tuple. The foyer's part comes first (computed once per foyer), the person's last;
# sdd_entrant, a transient flag of daily files, is last and outside the fingerprint.
FOYER_STATE_COLUMNS = (
    "fonorg",
    "numorg",
    "matricule",
    "numdemrsa",
    "dtdemrsa",
    "etat",
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
    # added by issue #9: part of the fingerprint only when set (`fingerprint`), so that the states stored
    # before them keep their fingerprints and the next monthly file does not repeat everyone
    "refusal_motif",
    "refusal_date",
    "pays",
)
STATE_COLUMNS = (
    "present",
    "absence_reason",
    *FOYER_STATE_COLUMNS,
    "role",
    "sdd",
    "idassedic",
    "death_date",  # added by issue #9, like the last three foyer columns
    "sdd_entrant",
)
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

State = tuple[Any, ...]  # values in STATE_COLUMNS order; dates as ISO text
_STATE_INDEX = {name: i for i, name in enumerate(STATE_COLUMNS)}


def _text_limits(table: Any, names: tuple[str, ...]) -> tuple[tuple[int, str, int], ...]:
    """(position, column, length) of the text columns with a length: a value longer than its column is a
    record problem here, not a database error mid-file (PostgreSQL refuses it; SQLite would store it)."""
    columns = table.c
    return tuple(
        (i, name, columns[name].type.length)
        for i, name in enumerate(names)
        if isinstance(columns[name].type, String) and columns[name].type.length
    )


IDENTITY_COLUMNS = ("qual", "nom", "nomnai", "prenom", "date_naissance", "sexe")
_FOYER_LIMITS = _text_limits(PersonState.__table__, FOYER_STATE_COLUMNS)
_PERSON_LIMITS = _text_limits(PersonState.__table__, ("idassedic",))  # the role is one of BRSA_ROLES here
_IDENTITY_LIMITS = _text_limits(Person.__table__, IDENTITY_COLUMNS)
# A person's checks in one pass over (idassedic, *identity): idassedic first, then the identity, as before.
_PERSON_ALL_LIMITS = _PERSON_LIMITS + tuple((i + 1, name, length) for i, name, length in _IDENTITY_LIMITS)
_FG_LENGTH: int = cast(String, FoyerEvent.__table__.c.fg.type).length or 12


def _too_long(values: tuple[Any, ...], limits: tuple[tuple[int, str, int], ...]) -> str | None:
    for i, name, length in limits:
        value = values[i]
        if value is not None and len(value) > length:
            return f"{name} is longer than {length} characters"
    return None


EXTENSION_COLUMNS = ("refusal_motif", "refusal_date", "pays", "death_date")
_CORE = operator.itemgetter(*(i for i, c in enumerate(STATE_COLUMNS[:-1]) if c not in EXTENSION_COLUMNS))
_EXTENSION = operator.itemgetter(*(_STATE_INDEX[c] for c in EXTENSION_COLUMNS))
_NO_EXTENSION = (None,) * len(EXTENSION_COLUMNS)


def fingerprint(state: State) -> str:
    """What decides whether a new state row is needed: every value but sdd_entrant (the last); the
    extension columns only when one is set (a state without them has the fingerprint it had before they
    existed). repr() of a tuple of str/bool/None is stable across runs and computed in C."""
    text = repr(_CORE(state))
    extension = _EXTENSION(state)
    if extension != _NO_EXTENSION:
        text += repr(extension)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _iso(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _earliest(susps: list[Suspension]) -> tuple[str | None, str | None]:
    if not susps:
        return None, None
    motifs = ",".join(sorted({s.motif for s in susps if s.motif}))[:60] or None
    dates = [s.since for s in susps if s.since is not None]
    return motifs, (min(dates).isoformat() if dates else None)


def foyer_state(foyer: FoyerRecord) -> tuple[Any, ...]:
    """The FOYER_STATE_COLUMNS values of a foyer."""
    a = foyer.address
    street = " ".join(x for x in (a.numvoie, a.typevoie, a.nomvoie) if x)
    adresse = " / ".join(x for x in (street, a.complement, a.lieudit) if x)[:200] or None
    return (
        foyer.fonorg,
        foyer.numorg,
        foyer.matricule,
        foyer.numdemrsa,
        _iso(foyer.dtdemrsa),
        foyer.etat,
        *_earliest(foyer.suspensions_versement),
        *_earliest(foyer.suspensions_droit),
        foyer.closure_motif,
        _iso(foyer.closure_date),
        foyer.transfer_in_from,
        _iso(foyer.transfer_in_date),
        foyer.transfer_out_to,
        _iso(foyer.transfer_out_date),
        a.numcom,
        a.codepos,
        a.nomcom,
        a.lines_abroad[:200] if a.lines_abroad else adresse,
        foyer.sitfam,
        _iso(foyer.ddnatdro),
        foyer.refusal_motif,
        _iso(foyer.refusal_date),
        a.pays,
    )


def absent_state(previous: dict[str, Any], reason: str) -> State:
    """The state of a person who left the foyer, or was absent from a full file: where they were last."""
    values: dict[str, Any] = dict.fromkeys(STATE_COLUMNS)
    values.update(
        present=False,
        absence_reason=reason,
        fonorg=previous["fonorg"],
        numorg=previous["numorg"],
        matricule=previous["matricule"],
        numdemrsa=previous["numdemrsa"],
        role=previous["role"],
    )
    return tuple(values[c] for c in STATE_COLUMNS)


# -- a foyer, prepared for the loader ---------------------------------------------------------


class PreparedPerson(NamedTuple):
    """A person of a prepared foyer."""

    position: int
    keys: list[tuple[str, str]]  # [(kind, value)], strongest first: nir (the NIR's lookup hash), matricule, ...
    nir13: str | None  # the NIR in clear, between our own processes only (the loader encrypts it to store it)
    nir_hash: str | None
    identity: tuple[Any, ...]  # (qual, nom, nomnai, prenom, date_naissance ISO, sexe)
    state: State


class Prepared(NamedTuple):
    """A foyer prepared for the loader. Only the persons whose role can be subject to droits et devoirs
    (BRSA_ROLES) are prepared, the others counted. `marshal` (the way batches cross from the reading
    process) sends a NamedTuple as the plain tuple it is; the loader names it again (`named`)."""

    position: int
    line: int | None
    fonorg: str | None
    numorg: str | None
    matricule: str | None
    departement: str | None
    persons_read: int
    not_stored: int
    problems: list[tuple[str, str, str]]  # (severity, code, message)
    events: list[tuple[str | None, str]]  # (dtliq ISO, fg)
    people: list[PreparedPerson]
    missing_blocks: int

    @classmethod
    def named(cls, item: tuple[Any, ...]) -> Prepared:
        foyer = cls._make(item)
        return foyer._replace(people=[PreparedPerson._make(p) for p in foyer.people])


# The state columns each block carries: when a record lacks the block, the values known before are kept.
KEPT_COLUMNS = {
    MISSING_PRESTATION: (
        "etat",
        "suspension_versement_motifs",
        "suspension_versement_since",
        "suspension_droit_motifs",
        "suspension_droit_since",
        "closure_motif",
        "closure_date",
        "ddnatdro",
        "refusal_motif",
        "refusal_date",
    ),
    MISSING_ADMINISTRATIVE: ("numcom", "codepos", "nomcom", "adresse", "sitfam", "pays"),
}


def keep_known(state: State, missing_blocks: int, previous: dict[str, Any]) -> State:
    """The state of a record that lacks some blocks, completed with what was known before (`previous`: the
    state in force, by column name)."""
    values = list(state)
    for block, columns in KEPT_COLUMNS.items():
        if missing_blocks & block:
            for column in columns:
                known = previous[column]
                values[_STATE_INDEX[column]] = known.isoformat() if isinstance(known, date) else known
    return tuple(values)


class Deriver:
    """Prepares foyers. Holds the HMAC key only: the reading process never sees the encryption keys."""

    def __init__(self, hmac_key: bytes) -> None:
        self.nir = NirLookup(hmac_key)
        self._secret = identity_secret(hmac_key)
        # keyed_mac's MAC with its key block already absorbed: copied per key (equal digests, ~35 % cheaper)
        self._mac = hashlib.blake2b(key=self._secret, digest_size=16)

    def _h(self, raw: str) -> str:
        mac = self._mac.copy()
        mac.update(raw.encode())
        return mac.hexdigest()

    def prepare(self, foyer: FoyerRecord) -> tuple[Any, ...]:
        """The foyer as a plain tuple in `Prepared` order (what `marshal` can send)."""
        shared = foyer_state(foyer)
        fonorg, numorg, matricule, numdemrsa = foyer.fonorg, foyer.numorg, foyer.matricule, foyer.numdemrsa
        persons: list[tuple[Any, ...]] = []
        not_stored = 0
        problems = foyer.problems
        overflow = _too_long(shared, _FOYER_LIMITS) or next(
            (f"FG is longer than {_FG_LENGTH} characters" for _d, fg in foyer.events if len(fg) > _FG_LENGTH), None
        )
        if overflow:
            problems = [*problems, (REJECT_FOYER, "invalid_field", f"foyer {foyer.position}: {overflow}")]
        h = self._h
        for p in foyer.persons:
            role = p.role
            if role not in BRSA_ROLES:
                not_stored += 1
                continue
            born = p.date_naissance.isoformat() if p.date_naissance is not None else None
            identity = (p.qual, p.nom, p.nomnai, p.prenom, born, p.sexe)
            person_overflow = _too_long((p.idassedic, *identity), _PERSON_ALL_LIMITS)
            if person_overflow:
                problems = [
                    *problems,
                    (REJECT_PERSON, "invalid_field", f"foyer {foyer.position}, person {p.position}: {person_overflow}"),
                ]
                continue
            keys: list[tuple[str, str]] = []
            nir_hash = None
            if p.nir13:
                nir_hash = self.nir.lookup_hash(p.nir13)
                keys.append(("nir", nir_hash))  # found through persons.nir_hash, not stored as a key
            if matricule:
                keys.append(("matricule", h(matricule_key_text(fonorg, numorg, matricule, role))))
            if numdemrsa:
                keys.append(("numdemrsa", h(f"dem|{numdemrsa}|{role}")))
            if foyer.previous_foyer is not None:
                # the person's key in the foyer it came from: found, it links them to their history
                keys.append(("matricule", h(matricule_key_text(*foyer.previous_foyer, role))))
            if p.nom and p.prenom and born:
                keys.append(("identity", h(identity_key_text(p.nom, p.prenom, born))))
            state = (True, None, *shared, role, p.sdd, p.idassedic, _iso(p.death_date), p.sdd_entrant)
            persons.append((p.position, keys, p.nir13, nir_hash, identity, state))
        return (
            foyer.position,
            foyer.line,
            fonorg,
            numorg,
            matricule,
            foyer.departement,
            len(foyer.persons),
            not_stored,
            problems,
            [(_iso(d), fg) for d, fg in foyer.events],
            persons,
            foyer.missing_blocks,
        )
