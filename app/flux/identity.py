"""Who each person of a flux file is: the one identity matcher of the ingestion.

A person is matched to a known one by their NIR, then by their other keys (matricule, demand number,
identity), never through a key two persons carry; otherwise they are created. Names and birth date alone
never join a record to a person the files show in another foyer on the same date (app.flux.identity_guard);
each identity-only match is said in the report and kept in `identity_matches` for review. Their persons row
and keys are written inside the file's transaction. Identity is the latest-dated file's: a file dated before the one
that last spoke of a person only fills what is unknown.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, NamedTuple

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from app.db import one_of
from app.flux.bulk import (
    PERSON_COLUMNS,
    T_AMBIGUOUS,
    T_FILES,
    T_IDENTITY_MATCHES,
    T_KEYS,
    T_PERSONS,
    BulkWriter,
    PersonIds,
    chunks,
)
from app.flux.derive import STATE_COLUMNS, Prepared, PreparedPerson, State
from app.flux.identity_guard import NOWHERE, Whereabouts, conflict, identity_candidates, load_whereabouts
from app.flux.report import IngestReport, ReferenceIntegrityError
from app.models.base import utcnow
from app.persons.order import FileKey, file_key
from app.security.nir import NirProtector

FoyerKey = tuple[Any, Any, Any]  # (fonorg, numorg, matricule)
_ROLE = STATE_COLUMNS.index("role")


class Accepted(NamedTuple):
    """A foyer kept, with its identified persons."""

    key: FoyerKey
    record: Prepared
    people: list[PreparedPerson]


class Known(NamedTuple):
    """What is known of a person who holds a key: to tell them apart, and which files last spoke of them."""

    nir_hash: str | None
    born: str | None  # ISO
    nom: str | None
    prenom: str | None
    nomnai: str | None
    first_file_id: int
    updated_file_id: int


class Resolved(NamedTuple):
    """A record of this file, its person identified."""

    foyer: FoyerKey
    person_id: int
    state: State
    missing_blocks: int
    seq: int  # the record's rank in the file


class PersonRow(NamedTuple):
    """A new person's row, in `PERSON_COLUMNS` order."""

    id: int
    departement_code: str
    nir_hash: str | None
    nir_encrypted: str | None
    qual: str | None
    nom: str | None
    nomnai: str | None
    prenom: str | None
    date_naissance: str | None  # ISO
    sexe: str | None
    stock: bool
    first_file_id: int
    first_received_on: date
    updated_file_id: int


@dataclass
class _Batch:
    """One batch's lookups (who holds each key now, what is known of them) and the writes it collects."""

    known: dict[str, int]  # key value -> person holding it before this batch
    info: dict[int, Known]
    keys: dict[int, FileKey]  # where the files that spoke of these persons stand
    batch_keys: dict[str, int] = field(default_factory=dict)  # key value -> person, as this batch gives it
    resolved_here: set[int] = field(default_factory=set)
    new_persons: list[PersonRow] = field(default_factory=list)
    newer_identity: list[dict[str, Any]] = field(default_factory=list)  # this file is the latest to speak of them
    older_identity: list[dict[str, Any]] = field(default_factory=list)  # a later file spoke already: fill gaps
    earlier_first: list[dict[str, Any]] = field(default_factory=list)  # dated before the first known of them
    key_inserts: dict[str, tuple[str, int]] = field(default_factory=dict)
    key_updates: dict[str, int] = field(default_factory=dict)
    # names + birth date alone: where the files show the persons it may designate; the foyers this batch
    # placed each person in; the matches it accepted (`identity_matches` rows)
    whereabouts: dict[int, Whereabouts] = field(default_factory=dict)
    placed: dict[int, tuple[FoyerKey, ...]] = field(default_factory=dict)
    identity_matches: list[dict[str, Any]] = field(default_factory=list)


_IDENTITY_NAMES = ("nir_hash", "nir_encrypted", "qual", "nom", "nomnai", "prenom", "sexe")


class IdentityMatcher:
    """Identifies the persons of one file, batch after batch (`resolve`). `seen` is shared with the
    ingestion: the persons this file's earlier batches identified."""

    def __init__(
        self,
        conn: Connection,
        writer: BulkWriter,
        protector: NirProtector,
        report: IngestReport,
        *,
        file_id: int,
        departement: str,
        key: FileKey,
        received_on: date,
        initial_stock: bool,
        seen: set[int],
    ) -> None:
        self.conn = conn
        self.writer = writer
        self.encrypt = protector.encrypt
        self.report = report
        self.file_id = file_id
        self.departement = departement
        self.key = key
        self.received_on = received_on
        self.initial_stock = initial_stock
        self.seen = seen
        self.records = 0  # person records identified: each record's rank in the file (`seq`)
        self.ambiguous_keys: set[str] = set()  # key values two persons carry, found in this file (few)
        self.new_ambiguous: dict[str, str] = {}  # of those, the ones not yet recorded: value -> kind
        self.known_ambiguous: set[str] = set()  # recorded by earlier files (ambiguous_keys)
        self.person_ids = PersonIds(conn)
        self.file_keys: dict[int, FileKey] = {}

    # -- one batch ------------------------------------------------------------------------------

    def resolve(self, accepted: list[Accepted]) -> tuple[list[Resolved], list[PersonRow]]:
        """Match each person to a known one or create them; write the persons and keys. Returns the
        persons in file order (each with its rank in the file) and the new persons' rows."""
        known, info = self._known_owners(accepted)
        keys = self._file_keys(f for k in info.values() for f in (k.first_file_id, k.updated_file_id))
        batch = _Batch(known, info, keys)
        batch.whereabouts = self._whereabouts(identity_candidates((f.people for f in accepted), known))
        resolved: list[Resolved] = []
        left = sum(len(foyer.people) for foyer in accepted)  # records of this batch not identified yet
        for foyer in accepted:
            position = foyer.record.position
            for person in foyer.people:
                matched = self._match(batch, person, foyer)
                if matched is None:
                    matched = self._create(batch, person, left)
                else:
                    self._update_identity(batch, person, matched)
                self._claim_keys(batch, person, matched, position)
                batch.resolved_here.add(matched)
                here = batch.placed.get(matched)
                if here is None:
                    batch.placed[matched] = (foyer.key,)
                elif foyer.key not in here:
                    batch.placed[matched] = (*here, foyer.key)
                self.records += 1
                left -= 1
                resolved.append(Resolved(foyer.key, matched, person.state, foyer.record.missing_blocks, self.records))
        self._write(batch)
        return resolved, batch.new_persons

    def _match(self, batch: _Batch, person: PreparedPerson, foyer: Accepted) -> int | None:
        """The known person this record is (NIR first, then the other keys), or None."""
        foyer_position = foyer.record.position
        nir_hash = person.nir_hash
        _qual, nom, _nomnai, prenom, born, _sexe = person.identity
        for kind, value in person.keys:
            if value in self.ambiguous_keys or value in self.known_ambiguous:
                continue  # carried by two persons: it identifies neither
            pid = batch.batch_keys.get(value, batch.known.get(value))
            if pid is None:
                continue
            cand = batch.info.get(pid)
            taken_here = pid in batch.resolved_here or pid in self.seen
            if (
                kind != "nir"
                and taken_here
                and cand is not None
                and (cand.born, cand.nom, cand.prenom) != (born, nom, prenom)
            ):
                # another record of this file, another person, already took this key
                self._ambiguous(value, kind, foyer_position, person.position)
                continue
            if (
                kind != "nir"
                and cand is not None
                and (
                    (nir_hash and cand.nir_hash and cand.nir_hash != nir_hash)
                    or (born and cand.born and cand.born != born)
                )
            ):
                # another person (another NIR, another birth date) holds this key: two persons
                # carry it, and it identifies neither from now on
                self._ambiguous(value, kind, foyer_position, person.position, earlier=not taken_here)
                continue
            if kind == "identity" and not self._identity_may_join(batch, person, foyer, value, pid, cand):
                continue
            self.report.matched_by[kind] = self.report.matched_by.get(kind, 0) + 1
            return pid
        return None

    def _identity_may_join(
        self, batch: _Batch, person: PreparedPerson, foyer: Accepted, value: str, pid: int, cand: Known | None
    ) -> bool:
        """Names + birth date alone designate `pid`: refused when the files show them in another foyer on
        this date (the key then identifies neither: two persons carry it); otherwise the match is said in
        the report and kept for review (`identity_matches`)."""
        where = batch.whereabouts.get(pid)
        if where is None:  # a person this batch gave the key to: rare, read now
            where = self._whereabouts({pid}).get(pid, NOWHERE)
            batch.whereabouts[pid] = where
        foyer_position, person_position = foyer.record.position, person.position
        why = conflict(foyer.key, where, batch.placed.get(pid, ()))
        if why is not None:
            self.report.identity_matches_refused += 1
            self.report.warn(
                "identity_match_refused",
                f"foyer {foyer_position}, person {person_position}: names and birth date are those of a known "
                f"person the files show {why}; not joined to them (a new person is created), and names + birth "
                "date identify neither from now on",
            )
            self._ambiguous(value, "identity", foyer_position, person_position, warn=False)
            return False
        fonorg, numorg, matricule = foyer.key
        self.report.identity_only_matches += 1
        self.report.warn(
            "identity_only_match",
            f"foyer {foyer_position}, person {person_position}: joined to a known person by names and birth date "
            "alone (no NIR, matricule or demand number in common); to review: `passerelle persons identity-matches`",
        )
        batch.identity_matches.append(
            {
                "departement_code": self.departement,
                "person_id": pid,
                "file_id": self.file_id,
                "received_on": self.received_on,
                "foyer_position": foyer_position,
                "person_position": person_position,
                "fonorg": fonorg,
                "numorg": numorg,
                "matricule": matricule,
                "role": person.state[_ROLE],
                "identity_key": value,
                "record_keys": [v for k, v in person.keys if k not in ("nir", "identity")],
                "brought_nir": bool(person.nir_hash) and (cand is None or not cand.nir_hash),
                "created_at": utcnow(),
                "status": "open",
            }
        )
        return True

    def _create(self, batch: _Batch, person: PreparedPerson, left: int) -> int:
        """A person no key identifies: a new one (`left`: the batch's records not identified yet, this one
        included: as many new persons at most)."""
        pid = self.person_ids.take(left)
        self.report.new_persons += 1
        qual, nom, nomnai, prenom, born, sexe = person.identity
        batch.new_persons.append(
            PersonRow(
                pid,
                self.departement,
                person.nir_hash,
                self.encrypt(person.nir13) if person.nir13 else None,
                qual,
                nom,
                nomnai,
                prenom,
                born,
                sexe,
                self.initial_stock,
                self.file_id,
                self.received_on,
                self.file_id,
            )
        )
        batch.info[pid] = Known(person.nir_hash, born, nom, prenom, nomnai, self.file_id, self.file_id)
        return pid

    def _update_identity(self, batch: _Batch, person: PreparedPerson, matched: int) -> None:
        """A known person: this file may be the first dated of them, or tell their identity anew."""
        nir_hash = person.nir_hash
        qual, nom, nomnai, prenom, _born, sexe = person.identity
        here = self.key
        current = batch.info[matched]
        if batch.keys[current.first_file_id] > here:
            batch.earlier_first.append({"b_id": matched, "u_first_file_id": self.file_id, "u_first": self.received_on})
            current = current._replace(first_file_id=self.file_id)
        if (nir_hash and current.nir_hash != nir_hash) or (current.nom, current.prenom, current.nomnai) != (
            nom,
            prenom,
            nomnai,
        ):
            values = {
                "b_id": matched,
                "u_nir_hash": nir_hash,
                "u_nir_encrypted": self.encrypt(person.nir13) if person.nir13 else None,
                "u_qual": qual,
                "u_nom": nom,
                "u_nomnai": nomnai,
                "u_prenom": prenom,
                "u_sexe": sexe,
            }
            if batch.keys[current.updated_file_id] <= here:
                batch.newer_identity.append(values | {"u_updated_file_id": self.file_id})
                current = current._replace(
                    nir_hash=nir_hash or current.nir_hash,
                    nom=nom,
                    prenom=prenom,
                    nomnai=nomnai,
                    updated_file_id=self.file_id,
                )
            else:
                batch.older_identity.append(values)
                current = current._replace(nir_hash=current.nir_hash or nir_hash)
        batch.info[matched] = current

    def _claim_keys(self, batch: _Batch, person: PreparedPerson, matched: int, foyer_position: int) -> None:
        """Give the record's keys to its person (unless another person of this file holds them)."""
        known = batch.known
        for kind, value in person.keys:
            if value in self.ambiguous_keys or value in self.known_ambiguous:
                continue
            owner = batch.batch_keys.get(value, known.get(value))
            if owner == matched:
                continue
            if kind != "nir" and owner is not None and (owner in batch.resolved_here or owner in self.seen):
                # Another person of this very file holds this key (two CJT in one foyer, two foyers
                # sharing a NUMDEMRSA): never merged, never moved from one to the other; said.
                self._ambiguous(value, kind, foyer_position, person.position)
                continue
            batch.batch_keys[value] = matched
            if kind == "nir":
                continue  # a NIR is never another's: it is the person's nir_hash (row or update)
            if value in known or value in batch.key_updates:
                batch.key_updates[value] = matched
            else:
                batch.key_inserts[value] = (kind, matched)

    def _ambiguous(
        self,
        value: str,
        kind: str,
        foyer_position: int,
        person_position: int,
        earlier: bool = False,
        warn: bool = True,
    ) -> None:
        """A key two persons carry: it identifies neither, from now on (recorded in `ambiguous_keys`)."""
        if value not in self.ambiguous_keys:
            self.ambiguous_keys.add(value)
            self.new_ambiguous[value] = kind
            if not warn:
                return
            where = "a person of an earlier file" if earlier else "another person's in this file"
            self.report.warn(
                "key_ambiguous",
                f"foyer {foyer_position}, person {person_position}: its {kind} key is also {where}; persons told "
                "apart by NIR, then names and birth date, and the key given to neither from now on",
            )

    # -- reads ----------------------------------------------------------------------------------

    def _whereabouts(self, person_ids: set[int]) -> dict[int, Whereabouts]:
        return load_whereabouts(self.conn, self.departement, self.file_id, self.key, self.received_on, person_ids)

    def _known_owners(self, accepted: list[Accepted]) -> tuple[dict[str, int], dict[int, Known]]:
        """Who holds each key of these persons now, and what is known of them."""
        all_keys: set[str] = set()
        nir_hashes: set[str] = set()
        for foyer in accepted:
            for person in foyer.people:
                for kind, value in person.keys:
                    (nir_hashes if kind == "nir" else all_keys).add(value)
        self._load_known_ambiguous(all_keys)
        all_keys -= self.known_ambiguous
        known = self._key_owners(all_keys, nir_hashes)
        owners = set(known.values())
        info = self._known_persons(owners)
        if len(info) < len(owners):
            raise ReferenceIntegrityError(f"{len(owners - info.keys())} identity key owner(s) missing from persons")
        return known, info

    def _load_known_ambiguous(self, values: set[str]) -> None:
        ak = T_AMBIGUOUS.c
        for chunk in chunks(sorted(values), 5000):
            self.known_ambiguous.update(
                self.conn.execute(
                    select(ak.value).where(ak.departement_code == self.departement, one_of(self.conn, ak.value, chunk))
                ).scalars()
            )

    def _key_owners(self, values: set[str], nir_hashes: set[str]) -> dict[str, int]:
        dep = self.departement
        pk = T_KEYS.c
        pt = T_PERSONS.c
        known: dict[str, int] = {}
        for chunk in chunks(sorted(values), 5000):
            for value, person_id in self.conn.execute(
                select(pk.value, pk.person_id).where(pk.departement_code == dep, one_of(self.conn, pk.value, chunk))
            ):
                known[value] = person_id
        for chunk in chunks(sorted(nir_hashes), 5000):
            for value, person_id in self.conn.execute(
                select(pt.nir_hash, pt.id).where(pt.departement_code == dep, one_of(self.conn, pt.nir_hash, chunk))
            ):
                known[value] = person_id
        return known

    def _known_persons(self, owners: set[int]) -> dict[int, Known]:
        pt = T_PERSONS.c
        info: dict[int, Known] = {}
        for chunk in chunks(sorted(owners), 5000):
            for row in self.conn.execute(
                select(
                    pt.id,
                    pt.nir_hash,
                    pt.date_naissance,
                    pt.nom,
                    pt.prenom,
                    pt.nomnai,
                    pt.first_file_id,
                    pt.updated_file_id,
                ).where(one_of(self.conn, pt.id, chunk))
            ):
                info[row.id] = Known(
                    nir_hash=row.nir_hash,
                    born=row.date_naissance.isoformat() if row.date_naissance is not None else None,
                    nom=row.nom,
                    prenom=row.prenom,
                    nomnai=row.nomnai,
                    first_file_id=row.first_file_id,
                    updated_file_id=row.updated_file_id,
                )
        return info

    def _file_keys(self, file_ids: Iterable[int]) -> dict[int, FileKey]:
        wanted = {f for f in file_ids if f not in self.file_keys and f != self.file_id}
        ft = T_FILES.c
        for chunk in chunks(sorted(wanted), 5000):
            for fid, received, created, type_flux in self.conn.execute(
                select(ft.id, ft.received_on, ft.created_at_caf, ft.type_flux).where(one_of(self.conn, ft.id, chunk))
            ):
                self.file_keys[fid] = file_key(received, created, type_flux, fid)
        self.file_keys[self.file_id] = self.key
        return self.file_keys

    # -- writes ---------------------------------------------------------------------------------

    def _write(self, batch: _Batch) -> None:
        """Persons and keys first (states reference them). What a record does not say (no NIR this time, a
        missing name) keeps the value known before."""
        self._write_persons(batch)
        self._write_ambiguous(batch)
        self._write_keys(batch)
        if batch.identity_matches:
            self.conn.execute(insert(T_IDENTITY_MATCHES), batch.identity_matches)

    def _write_persons(self, batch: _Batch) -> None:
        pt = T_PERSONS.c
        if batch.new_persons:
            self.writer.insert(T_PERSONS, PERSON_COLUMNS, batch.new_persons)
        if batch.newer_identity:
            self.conn.execute(
                update(T_PERSONS)
                .where(pt.id == bindparam("b_id"))
                .values(
                    {name: func.coalesce(bindparam(f"u_{name}"), T_PERSONS.c[name]) for name in _IDENTITY_NAMES}
                    | {"updated_file_id": bindparam("u_updated_file_id")}
                ),
                batch.newer_identity,
            )
        if batch.older_identity:
            self.conn.execute(
                update(T_PERSONS)
                .where(pt.id == bindparam("b_id"))
                .values({name: func.coalesce(T_PERSONS.c[name], bindparam(f"u_{name}")) for name in _IDENTITY_NAMES}),
                batch.older_identity,
            )
        if batch.earlier_first:
            self.conn.execute(
                update(T_PERSONS)
                .where(pt.id == bindparam("b_id"))
                .values(first_file_id=bindparam("u_first_file_id"), first_received_on=bindparam("u_first")),
                batch.earlier_first,
            )

    def _write_ambiguous(self, batch: _Batch) -> None:
        """Keys found shared in this batch: given to nobody (nor kept by whoever held them before)."""
        if not self.new_ambiguous:
            return
        pk = T_KEYS.c
        dep = self.departement
        shared = sorted(self.new_ambiguous)
        for value in shared:
            batch.key_inserts.pop(value, None)
            batch.key_updates.pop(value, None)
        for chunk in chunks(shared, 5000):
            self.conn.execute(delete(T_KEYS).where(pk.departement_code == dep, one_of(self.conn, pk.value, chunk)))
        self.writer.insert(
            T_AMBIGUOUS,
            ("departement_code", "value", "kind", "file_id"),
            [(dep, value, self.new_ambiguous[value], self.file_id) for value in shared],
        )
        self.known_ambiguous.update(shared)
        self.new_ambiguous = {}

    def _write_keys(self, batch: _Batch) -> None:
        pk = T_KEYS.c
        dep = self.departement
        if batch.key_inserts:
            self.writer.insert(
                T_KEYS,
                ("departement_code", "kind", "value", "person_id"),
                # in the primary key's order: the B-tree is filled page after page instead of at random
                [(dep, kind, value, pid) for value, (kind, pid) in sorted(batch.key_inserts.items())],
            )
        if batch.key_updates:
            self.conn.execute(
                update(T_KEYS)
                .where(pk.departement_code == dep, pk.value == bindparam("b_value"))
                .values(person_id=bindparam("b_person")),
                [{"b_value": v, "b_person": pid} for v, pid in batch.key_updates.items()],
            )
