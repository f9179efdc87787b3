"""Applies a flux file to the database: all or nothing, idempotent, keeping every person's dated history.

One file = one transaction. Foyers are read as a stream and applied in batches inside that transaction
(bounded memory whatever the file size); a file-level problem rolls everything back, and the file is
then recorded as rejected and copied to quarantine with its report. See docs/ingestion.md.
"""

from __future__ import annotations

import gc
import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, NamedTuple, cast

import structlog
from sqlalchemy import (
    Connection,
    Engine,
    Table,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from app.clock import today
from app.db import claim_write, one_of, unlimited_statements
from app.errors import ExitCode, Unprocessable
from app.flux.derive import (
    ROW_COLUMNS,
    STATE_COLUMNS,
    Prepared,
    PreparedPerson,
    State,
    absent_state,
    fingerprint,
    keep_known,
)
from app.flux.instruction import attach_pending, peek_nature
from app.flux.order import FileKey, file_key, state_order, states_up_to
from app.flux.pipeline import open_source
from app.flux.reader import REJECT_FOYER, REJECT_PERSON, WARNING, FluxRejected
from app.flux.records import FluxHeader
from app.flux.replay import ABSENCE_RANK, FULL_FILES, Replay
from app.kit.files import copy_private, private_dir, write_private_text
from app.models import (
    AmbiguousKey,
    Departement,
    EpisodeQueue,
    FluxFile,
    FluxObservation,
    FoyerEvent,
    InstructionRecord,
    Person,
    PersonKey,
    PersonState,
)
from app.security.auth import DEPARTEMENT_RE
from app.security.nir import NirProtector
from app.settings import Settings

log = structlog.get_logger(__name__)

T_FILES = cast(Table, FluxFile.__table__)
T_OBSERVATIONS = cast(Table, FluxObservation.__table__)
T_EVENTS = cast(Table, FoyerEvent.__table__)
T_KEYS = cast(Table, PersonKey.__table__)
T_STATES = cast(Table, PersonState.__table__)
T_PERSONS = cast(Table, Person.__table__)
T_DEPARTEMENTS = cast(Table, Departement.__table__)
T_QUEUE = cast(Table, EpisodeQueue.__table__)
T_AMBIGUOUS = cast(Table, AmbiguousKey.__table__)
T_INSTRUCTION = cast(Table, InstructionRecord.__table__)

BATCH_FOYERS = 2000
MAX_LISTED = 1000  # warnings / rejected records listed in a report (all are counted)
MAX_REASON = 300  # characters of a rejection's reason kept in the report and the database
_INGEST_LOCK_ID = 0x5A55E11E  # PostgreSQL advisory lock: one ingestion at a time


class IngestInputError(Unprocessable, ValueError):
    """A wrong option given with the file (not a problem of the file itself): nothing is recorded."""

    exit_code = ExitCode.USAGE


class ReferenceIntegrityError(RuntimeError):
    """Stored rows point to a person who does not exist. The bulk tables carry no foreign keys (on
    PostgreSQL each check cost as much as the row's write); the ingestion, their only writer, checks the
    references it relies on instead, and refuses to build on a broken one: nothing of the file is applied."""


@dataclass
class IngestOptions:
    received_on: date
    initial_stock: bool = False
    departement: str | None = None  # expected département; None: the file's own (first foyer)
    ingested_by: str | None = None
    display_name: str | None = None
    parallel: bool | None = None  # read the file in a child process (default: for big files)


@dataclass
class IngestReport:
    status: str  # applied | duplicate | rejected
    filename: str
    file_id: int | None = None
    departement: str | None = None
    organisme: str | None = None
    type_flux: str | None = None
    created_at_caf: str | None = None
    received_on: str | None = None
    initial_stock: bool = False
    foyers: int = 0
    persons_read: int = 0
    persons_brsa: int = 0
    persons_not_stored: int = 0
    new_persons: int = 0
    state_changes: int = 0
    unchanged: int = 0
    absences: int = 0
    # Files dated after this one applied before it, and the persons whose later facts were re-examined.
    later_files: int = 0
    reexamined: int = 0
    # NATFLUX: D a beneficiary flux, I an instruction flux (its persons attached now, or kept aside until a
    # beneficiary file brings them; beneficiary files report how many they attached)
    nature: str = "D"
    webhook_events_matched: int = 0  # partners' events waiting for a person this file brought
    instruction_attached: int = 0
    instruction_kept_aside: int = 0
    matched_by: dict[str, int] = field(default_factory=dict)
    warnings_count: int = 0
    rejected_count: int = 0
    warnings: list[dict[str, str]] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    error_code: str | None = None
    error: str | None = None
    error_position: str | None = None
    duplicate_of: int | None = None
    duration_ms: int = 0
    quarantine_path: str | None = None
    # After the commit: the entry episodes brought up to date (persons), or why not.
    episodes_refreshed: int | None = None
    episodes_ms: int | None = None
    episodes_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def warn(self, code: str, message: str) -> None:
        self.warnings_count += 1
        if len(self.warnings) < MAX_LISTED:
            self.warnings.append({"code": code, "message": message})

    def reject(self, code: str, message: str) -> None:
        """A record (foyer or person) set aside; the file is applied without it."""
        self.rejected_count += 1
        if len(self.rejected) < MAX_LISTED:
            self.rejected.append({"code": code, "message": message})


ProgressCallback = Callable[[int, int], None]  # (foyers done, bytes read)


def file_sha256(path: Path) -> tuple[str, int]:
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


# -- bulk writes, per backend -----------------------------------------------------------------


def _sqlite_datetime(value: datetime) -> str:
    # The text form SQLAlchemy's SQLite DateTime type writes and reads back.
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


# Raw executemany on SQLite: adapt dates the way SQLAlchemy stores them (ISO text). These adapters only
# see values we pass to the driver ourselves; SQLAlchemy converts its own values before they get here.
sqlite3.register_adapter(date, date.isoformat)
sqlite3.register_adapter(datetime, _sqlite_datetime)


class BulkWriter:
    """Fast inserts inside the caller's transaction: COPY on PostgreSQL, executemany on SQLite."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.postgres = conn.dialect.name == "postgresql"

    def insert(self, table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        rows = list(rows)
        if not rows:
            return 0
        cols = ", ".join(f'"{c}"' for c in columns)
        raw = self.conn.connection.driver_connection
        if self.postgres:
            with raw.cursor() as cur, cur.copy(f'COPY "{table.name}" ({cols}) FROM STDIN') as copy:  # type: ignore[union-attr]
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" for _ in columns)
            raw.executemany(f'INSERT INTO "{table.name}" ({cols}) VALUES ({marks})', rows)  # type: ignore[union-attr]
        return len(rows)


# -- the ingestion itself ---------------------------------------------------------------------


class _Accepted(NamedTuple):
    """A foyer kept, with its identified persons."""

    key: tuple[Any, Any, Any]  # (fonorg, numorg, matricule)
    record: Prepared
    people: list[PreparedPerson]


class _Known(NamedTuple):
    """What is known of a person who holds a key: to tell them apart, and which files last spoke of them."""

    nir_hash: str | None
    born: str | None  # ISO
    nom: str | None
    prenom: str | None
    nomnai: str | None
    first_file_id: int
    updated_file_id: int


class _Resolved(NamedTuple):
    """A record of this file, its person identified."""

    foyer: tuple[Any, Any, Any]
    person_id: int
    state: State
    missing_blocks: int
    seq: int  # the record's rank in the file


class _Ingestion:
    def __init__(
        self,
        conn: Connection,
        settings: Settings,
        file_row_id: int,
        options: IngestOptions,
        report: IngestReport,
    ) -> None:
        self.conn = conn
        self.settings = settings
        self.protector = NirProtector(settings.encryption_keys, settings.hmac_key)
        self.file_id = file_row_id
        self.options = options
        self.report = report
        self.writer = BulkWriter(conn)
        self.departement: str | None = options.departement
        self.header: FluxHeader | None = None
        self.created_at: datetime | None = None
        self.records = 0  # person records applied: each record's rank in the file (`seq`)
        self.absence_seq = ABSENCE_RANK
        self.seen: set[int] = set()
        self.ambiguous_keys: set[str] = set()  # key values two persons carry, found in this file (few)
        self.new_ambiguous: dict[str, str] = {}  # of those, the ones not yet recorded: value -> kind
        self.known_ambiguous: set[str] = set()  # recorded by earlier files (ambiguous_keys)
        self.created_by_stock: set[int] = set()  # persons an initial stock creates (not queued: see _write_states)
        self.left_candidates: dict[int, dict[str, Any]] = {}
        self.next_person_id = _next_person_base(conn)
        self.fonorg: str | None = None
        self.numorg: str | None = None
        self._pending_events: list[tuple[Any, ...]] = []
        self.batches = 0
        self.table_rows_at_start: int | None = None
        self.file_keys: dict[int, FileKey] = {}

    @property
    def key(self) -> FileKey:
        """Where this file stands among the dated facts (app.flux.order)."""
        assert self.created_at is not None and self.header is not None
        return file_key(self.options.received_on, self.created_at, self.header.type_flux, self.file_id)

    def _file_keys(self, file_ids: Iterable[int]) -> dict[int, FileKey]:
        wanted = {f for f in file_ids if f not in self.file_keys and f != self.file_id}
        ft = T_FILES.c
        for chunk in _chunks(sorted(wanted), 5000):
            for fid, received, created, type_flux in self.conn.execute(
                select(ft.id, ft.received_on, ft.created_at_caf, ft.type_flux).where(one_of(self.conn, ft.id, chunk))
            ):
                self.file_keys[fid] = file_key(received, created, type_flux, fid)
        self.file_keys[self.file_id] = self.key
        return self.file_keys

    # problems --------------------------------------------------------------------------------

    def _warn(self, code: str, message: str) -> None:
        self.report.warn(code, message)

    def _reject(self, code: str, message: str) -> None:
        self.report.reject(code, message)

    def _ambiguous(
        self, value: str, kind: str, foyer_position: int, person_position: int, earlier: bool = False
    ) -> None:
        """A key two persons carry: it identifies neither, from now on (recorded in `ambiguous_keys`)."""
        if value not in self.ambiguous_keys:
            self.ambiguous_keys.add(value)
            self.new_ambiguous[value] = kind
            where = "a person of an earlier file" if earlier else "another person's in this file"
            self._warn(
                "key_ambiguous",
                f"foyer {foyer_position}, person {person_position}: its {kind} key is also {where}; persons told "
                "apart by NIR, then names and birth date, and the key given to neither from now on",
            )

    # state in force --------------------------------------------------------------------------

    def _up_to_here(self, inclusive: bool = True) -> Any:
        """States dated up to this file, its own earlier records included (or not)."""
        assert self.header is not None
        return states_up_to(T_STATES.c, self.key, self.header.type_flux, inclusive)

    def _latest_states(self, person_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        ids = sorted(set(person_ids))
        if not ids:
            return {}
        ps = T_STATES.c
        out: dict[int, dict[str, Any]] = {}
        for chunk in _chunks(ids, 5000):
            rows = self.conn.execute(
                select(ps.person_id, *[ps[c] for c in STATE_COLUMNS], ps.fingerprint)
                .where(one_of(self.conn, ps.person_id, chunk), self._up_to_here())
                .order_by(ps.person_id, *state_order(ps))
            ).mappings()
            for row in rows:
                out[row["person_id"]] = dict(row)
        return out

    def _refresh_statistics(self) -> None:
        """PostgreSQL plans from table statistics; rows this transaction added are not in them, and on a
        table that was small the planner would scan it whole for each batch. Re-analyse as this file's rows
        double (batches 2, 4, 8...), and only while they are a large part of the table (not for a daily
        file on a big département, where ANALYZE would cost more than it saves)."""
        self.batches += 1
        if not self.writer.postgres or self.batches & (self.batches - 1) != 0:
            return
        if self.table_rows_at_start is None:
            self.table_rows_at_start = int(
                self.conn.execute(
                    text("SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = 'person_states'::regclass")
                ).scalar_one()
            )
        if self.report.state_changes > 0.2 * max(self.table_rows_at_start, 1000):
            self.conn.execute(text("ANALYZE persons, person_keys, person_states, flux_observations"))

    # one batch of foyers, in four phases -----------------------------------------------------

    def apply_batch(self, batch: list[tuple[Any, ...]]) -> None:
        assert self.departement is not None and self.created_at is not None
        self._refresh_statistics()
        accepted = self._screen([Prepared.named(item) for item in batch])
        resolved, new_persons = self._resolve_identities(accepted)
        previous = self._detect_departures(resolved)
        self._write_states(resolved, new_persons, previous)
        self.report.persons_brsa += len(resolved)
        self._flush_events()

    def _screen(self, foyers: list[Prepared]) -> list[_Accepted]:
        """Count what was read; set aside rejected foyers and persons; keep the foyers' events."""
        dep = self.departement
        report = self.report
        accepted: list[_Accepted] = []
        for foyer in foyers:
            report.foyers += 1
            report.persons_read += foyer.persons_read
            rejected_foyer = False
            for severity, code, message in foyer.problems:
                if severity == REJECT_FOYER:
                    rejected_foyer = True
                    self._reject(code, message)
                elif severity == REJECT_PERSON:
                    self._reject(code, message)
                else:
                    self._warn(code, message)
            if not rejected_foyer and foyer.departement and foyer.departement != dep:
                self._reject(
                    "other_departement",
                    f"foyer {foyer.position}: belongs to département {foyer.departement[:3]!r}, not {dep}",
                )
                rejected_foyer = True
            if rejected_foyer:
                continue
            report.persons_not_stored += foyer.not_stored
            identified = []
            for person in foyer.people:
                if not person.keys:
                    self._reject(
                        "unidentifiable_person",
                        f"foyer {foyer.position}, person {person.position}: no NIR, matricule, demand number or "
                        "identity",
                    )
                    continue
                identified.append(person)
            accepted.append(_Accepted((foyer.fonorg, foyer.numorg, foyer.matricule), foyer, identified))
            if foyer.events:
                self._pending_events.extend(
                    (self.file_id, dep, foyer.fonorg, foyer.numorg, foyer.matricule, d, fg[:12])
                    for d, fg in foyer.events
                )
        return accepted

    def _known_owners(self, accepted: list[_Accepted]) -> tuple[dict[str, int], dict[int, _Known]]:
        """Who holds each key of these persons now, and what is known of them."""
        dep = self.departement
        all_keys: set[str] = set()
        nir_hashes: set[str] = set()
        for foyer in accepted:
            for person in foyer.people:
                for kind, value in person.keys:
                    (nir_hashes if kind == "nir" else all_keys).add(value)
        pk = T_KEYS.c
        pt = T_PERSONS.c
        ak = T_AMBIGUOUS.c
        for chunk in _chunks(sorted(all_keys), 5000):
            self.known_ambiguous.update(
                self.conn.execute(
                    select(ak.value).where(ak.departement_code == dep, one_of(self.conn, ak.value, chunk))
                ).scalars()
            )
        all_keys -= self.known_ambiguous
        known: dict[str, int] = {}
        for chunk in _chunks(sorted(all_keys), 5000):
            for value, person_id in self.conn.execute(
                select(pk.value, pk.person_id).where(pk.departement_code == dep, one_of(self.conn, pk.value, chunk))
            ):
                known[value] = person_id
        for chunk in _chunks(sorted(nir_hashes), 5000):
            for value, person_id in self.conn.execute(
                select(pt.nir_hash, pt.id).where(pt.departement_code == dep, one_of(self.conn, pt.nir_hash, chunk))
            ):
                known[value] = person_id
        info: dict[int, _Known] = {}
        owners = set(known.values())
        for chunk in _chunks(sorted(owners), 5000):
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
                born = row[2].isoformat() if row[2] is not None else None
                info[row[0]] = _Known(row[1], born, row[3], row[4], row[5], row[6], row[7])
        if len(info) < len(owners):
            raise ReferenceIntegrityError(f"{len(owners - info.keys())} identity key owner(s) missing from persons")
        return known, info

    def _resolve_identities(self, accepted: list[_Accepted]) -> tuple[list[_Resolved], list[tuple[Any, ...]]]:
        """Match each person to a known one (NIR, then the other keys, never through a key two persons of
        this file carry) or create them; write the persons and keys. Returns the persons in file order
        (each with its rank in the file) and the new persons' rows."""
        dep = self.departement
        known, info = self._known_owners(accepted)
        keys = self._file_keys(f for k in info.values() for f in (k.first_file_id, k.updated_file_id))
        here = self.key
        new_persons: list[tuple[Any, ...]] = []
        newer_identity: list[dict[str, Any]] = []  # this file is the latest to speak of them
        older_identity: list[dict[str, Any]] = []  # a later file spoke already: fill only what is unknown
        earlier_first: list[dict[str, Any]] = []  # this file is dated before the first known of them
        key_inserts: dict[str, tuple[str, int]] = {}
        key_updates: dict[str, int] = {}
        batch_keys: dict[str, int] = {}
        resolved: list[_Resolved] = []
        encrypt = self.protector.encrypt
        ambiguous = self.ambiguous_keys
        resolved_here: set[int] = set()
        for foyer in accepted:
            for person in foyer.people:
                nir_hash = person.nir_hash
                qual, nom, nomnai, prenom, born, sexe = person.identity
                matched: int | None = None
                for kind, value in person.keys:
                    if value in ambiguous or value in self.known_ambiguous:
                        continue  # carried by two persons: it identifies neither
                    pid = batch_keys.get(value, known.get(value))
                    if pid is None:
                        continue
                    cand = info.get(pid)
                    if (
                        kind != "nir"
                        and (pid in resolved_here or pid in self.seen)
                        and cand is not None
                        and (cand.born, cand.nom, cand.prenom) != (born, nom, prenom)
                    ):
                        # another record of this file, another person, already took this key
                        self._ambiguous(value, kind, foyer.record.position, person.position)
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
                        earlier = pid not in resolved_here and pid not in self.seen
                        self._ambiguous(value, kind, foyer.record.position, person.position, earlier)
                        continue
                    matched = pid
                    self.report.matched_by[kind] = self.report.matched_by.get(kind, 0) + 1
                    break
                if matched is None:
                    matched = self._new_person_id()
                    self.report.new_persons += 1
                    new_persons.append(
                        (
                            matched,
                            dep,
                            nir_hash,
                            encrypt(person.nir13) if person.nir13 else None,
                            *person.identity,
                            self.options.initial_stock,
                            self.file_id,
                            self.options.received_on,
                            self.file_id,
                        )
                    )
                    info[matched] = _Known(nir_hash, born, nom, prenom, nomnai, self.file_id, self.file_id)
                else:
                    current = info[matched]
                    if keys[current.first_file_id] > here:
                        earlier_first.append(
                            {"b_id": matched, "u_first_file_id": self.file_id, "u_first": self.options.received_on}
                        )
                        current = current._replace(first_file_id=self.file_id)
                    if (nir_hash and current.nir_hash != nir_hash) or (current.nom, current.prenom, current.nomnai) != (
                        nom,
                        prenom,
                        nomnai,
                    ):
                        values = {
                            "b_id": matched,
                            "u_nir_hash": nir_hash,
                            "u_nir_encrypted": encrypt(person.nir13) if person.nir13 else None,
                            "u_qual": qual,
                            "u_nom": nom,
                            "u_nomnai": nomnai,
                            "u_prenom": prenom,
                            "u_sexe": sexe,
                        }
                        if keys[current.updated_file_id] <= here:
                            newer_identity.append(values | {"u_updated_file_id": self.file_id})
                            current = current._replace(
                                nir_hash=nir_hash or current.nir_hash,
                                nom=nom,
                                prenom=prenom,
                                nomnai=nomnai,
                                updated_file_id=self.file_id,
                            )
                        else:
                            older_identity.append(values)
                            current = current._replace(nir_hash=current.nir_hash or nir_hash)
                    info[matched] = current
                for kind, value in person.keys:
                    if value in ambiguous or value in self.known_ambiguous:
                        continue
                    owner = batch_keys.get(value, known.get(value))
                    if owner == matched:
                        continue
                    if kind != "nir" and owner is not None and (owner in resolved_here or owner in self.seen):
                        # Another person of this very file holds this key (two CJT in one foyer, two foyers
                        # sharing a NUMDEMRSA): never merged, never moved from one to the other; said.
                        self._ambiguous(value, kind, foyer.record.position, person.position)
                        continue
                    batch_keys[value] = matched
                    if kind == "nir":
                        continue  # a NIR is never another's: it is the person's nir_hash (row or update)
                    if value in known or value in key_updates:
                        key_updates[value] = matched
                    else:
                        key_inserts[value] = (kind, matched)
                resolved_here.add(matched)
                self.records += 1
                resolved.append(_Resolved(foyer.key, matched, person.state, foyer.record.missing_blocks, self.records))
        self._write_persons_and_keys(
            new_persons, newer_identity, older_identity, earlier_first, key_inserts, key_updates
        )
        return resolved, new_persons

    def _write_persons_and_keys(
        self,
        new_persons: list[tuple[Any, ...]],
        newer_identity: list[dict[str, Any]],
        older_identity: list[dict[str, Any]],
        earlier_first: list[dict[str, Any]],
        key_inserts: dict[str, tuple[str, int]],
        key_updates: dict[str, int],
    ) -> None:
        """Persons and keys first (states reference them). Identity is the latest-dated file's: what a
        record does not say (no NIR this time, a missing name) keeps the value known before, and a file
        dated before the one that last spoke only fills what is unknown."""
        pt = T_PERSONS.c
        pk = T_KEYS.c
        dep = self.departement
        names = ("nir_hash", "nir_encrypted", "qual", "nom", "nomnai", "prenom", "sexe")
        if new_persons:
            self.writer.insert(T_PERSONS, PERSON_COLUMNS, new_persons)
        if newer_identity:
            self.conn.execute(
                update(T_PERSONS)
                .where(pt.id == bindparam("b_id"))
                .values(
                    {name: func.coalesce(bindparam(f"u_{name}"), T_PERSONS.c[name]) for name in names}
                    | {"updated_file_id": bindparam("u_updated_file_id")}
                ),
                newer_identity,
            )
        if older_identity:
            self.conn.execute(
                update(T_PERSONS)
                .where(pt.id == bindparam("b_id"))
                .values({name: func.coalesce(T_PERSONS.c[name], bindparam(f"u_{name}")) for name in names}),
                older_identity,
            )
        if earlier_first:
            self.conn.execute(
                update(T_PERSONS)
                .where(pt.id == bindparam("b_id"))
                .values(first_file_id=bindparam("u_first_file_id"), first_received_on=bindparam("u_first")),
                earlier_first,
            )
        if self.new_ambiguous:
            # keys found shared in this batch: given to nobody (nor kept by whoever held them before)
            shared = sorted(self.new_ambiguous)
            for value in shared:
                key_inserts.pop(value, None)
                key_updates.pop(value, None)
            for chunk in _chunks(shared, 5000):
                self.conn.execute(delete(T_KEYS).where(pk.departement_code == dep, one_of(self.conn, pk.value, chunk)))
            self.writer.insert(
                T_AMBIGUOUS,
                ("departement_code", "value", "kind", "file_id"),
                [(dep, value, self.new_ambiguous[value], self.file_id) for value in shared],
            )
            self.known_ambiguous.update(shared)
            self.new_ambiguous = {}
        if key_inserts:
            self.writer.insert(
                T_KEYS,
                ("departement_code", "kind", "value", "person_id"),
                [(dep, kind, value, pid) for value, (kind, pid) in key_inserts.items()],
            )
        if key_updates:
            self.conn.execute(
                update(T_KEYS)
                .where(pk.departement_code == dep, pk.value == bindparam("b_value"))
                .values(person_id=bindparam("b_person")),
                [{"b_value": v, "b_person": pid} for v, pid in key_updates.items()],
            )

    def _detect_departures(self, resolved: list[_Resolved]) -> dict[int, dict[str, Any]]:
        """The states in force for these persons and for the members these foyers had; a member whose
        foyer is here without them left it (unless this file shows them elsewhere: decided in `finish`).
        A foyer is "here" when at least one of its persons is."""
        ps = T_STATES.c
        foyer_keys = {r.foyer for r in resolved}
        candidates: set[int] = set()
        matricules = sorted({m for _, _, m in foyer_keys if m})
        for chunk in _chunks(matricules, 5000):
            candidates.update(
                self.conn.execute(
                    select(ps.person_id)
                    .where(ps.departement_code == self.departement, one_of(self.conn, ps.matricule, chunk))
                    .distinct()
                ).scalars()
            )
        previous = self._latest_states({r.person_id for r in resolved} | candidates)
        present_now: dict[tuple[Any, Any, Any], set[int]] = {}
        for r in resolved:
            present_now.setdefault(r.foyer, set()).add(r.person_id)
        for pid in candidates:
            prev = previous.get(pid)
            if prev is None or not prev["present"]:
                continue
            key = (prev["fonorg"], prev["numorg"], prev["matricule"])
            if key in foyer_keys and pid not in present_now.get(key, set()):
                self.left_candidates[pid] = prev
        return previous

    def _write_states(
        self, resolved: list[_Resolved], new_persons: list[tuple[Any, ...]], previous: dict[int, dict[str, Any]]
    ) -> None:
        """A state row for each record that changes what is in force (compared with the state in force at
        this file's date), and an observation for every record."""
        rows = []
        observations = []
        in_force: dict[int, tuple[str, State | dict[str, Any]]] = {
            pid: (prev["fingerprint"], prev) for pid, prev in previous.items()
        }
        for r in resolved:
            pid, state = r.person_id, r.state
            self.seen.add(pid)
            current = in_force.get(pid)
            if r.missing_blocks and current is not None:
                # the record lacks blocks: what they would have said is the state in force
                known = current[1]
                known_values = known if isinstance(known, dict) else dict(zip(STATE_COLUMNS, known, strict=True))
                if known_values["present"]:
                    state = keep_known(state, r.missing_blocks, known_values)
            print_ = fingerprint(state)
            observations.append((self.file_id, r.seq, pid, *r.foyer, print_, r.missing_blocks, state[-1]))
            if current is not None and current[0] == print_:
                self.report.unchanged += 1
                continue
            in_force[pid] = (print_, state)  # a person twice in the file: the later record wins
            rows.append(self._state_row(pid, state, print_, r.seq))
        self.report.state_changes += self.writer.insert(T_STATES, ROW_COLUMNS, rows)
        self.writer.insert(T_OBSERVATIONS, OBSERVATION_COLUMNS, observations)
        changed = {row[0] for row in rows} | {row[0] for row in new_persons}
        if self.options.initial_stock:
            # A person the initial stock creates has one fact, the stock, and no event: no entry episode
            # to compute (app.rules.episodes.STOCK_ALONE_OPENS_NOTHING; asserted in tests/test_rules.py).
            # Those with more than one state in this file are queued at its end (`finish`).
            self.created_by_stock.update(row[0] for row in new_persons)
            changed -= self.created_by_stock
        self._mark_stale(changed)

    def _mark_stale(self, person_ids: set[int]) -> None:
        """Their facts changed: queue them for a refresh of their entry episodes (app.orientation.episodes),
        which runs after this file's commit. Insert-only: no lock a reader or an event recording needs."""
        assert self.departement is not None
        self.writer.insert(
            T_QUEUE, ("person_id", "departement_code"), [(pid, self.departement) for pid in sorted(person_ids)]
        )

    def _flush_events(self) -> None:
        if self._pending_events:
            self.writer.insert(
                T_EVENTS,
                ("file_id", "departement_code", "fonorg", "numorg", "matricule", "dtliq", "fg"),
                self._pending_events,
            )
            self._pending_events = []

    def _state_row(self, pid: int, state: State, print_: str, seq: int) -> tuple[Any, ...]:
        assert self.header is not None
        return (
            pid,
            self.file_id,
            self.departement,
            self.options.received_on,
            self.created_at,
            seq,
            self.header.type_flux,
            *state,
            print_,
        )

    def _new_person_id(self) -> int:
        self.next_person_id += 1
        return self.next_person_id

    # end of file -----------------------------------------------------------------------------

    def finish(self) -> None:
        assert self.header is not None and self.departement is not None
        rows = []
        absent: dict[int, tuple[dict[str, Any], str]] = {}
        for pid, prev in self.left_candidates.items():
            if pid not in self.seen:
                absent[pid] = (prev, "left_foyer")
        if self.header.type_flux in FULL_FILES:
            for pid, prev in self._present_in_organisme().items():
                if pid not in self.seen and pid not in absent:
                    absent[pid] = (prev, "absent_full_file")
        self._check_persons_exist(set(absent) | set(self.left_candidates))
        for pid in sorted(absent):
            prev, reason = absent[pid]
            state = absent_state(prev, reason)
            self.absence_seq += 1
            rows.append(self._state_row(pid, state, fingerprint(state), self.absence_seq))
        self.report.absences = self.writer.insert(T_STATES, ROW_COLUMNS, rows)
        self._mark_stale(set(absent))
        if self.options.initial_stock:
            # persons of the stock with two states in it (twice in the file, or left a foyer within it)
            ps = T_STATES.c
            self.conn.execute(
                insert(T_QUEUE).from_select(
                    ["person_id", "departement_code"],
                    select(ps.person_id, ps.departement_code)
                    .where(ps.file_id == self.file_id)
                    .group_by(ps.person_id, ps.departement_code)
                    .having(func.count() > 1),
                )
            )
        # instruction records waiting for a person this file may have brought
        self.report.instruction_attached = attach_pending(self.conn, self.departement)
        later = Replay(self.conn, self.writer, self.departement, self.key, self.header.type_flux)
        if later.files:
            # Files dated after this one were applied before it: what they said of these persons is
            # re-examined with this file in its place (app.flux.replay).
            changed = later.run(self.seen | set(absent))
            self.report.later_files = len(later.files)
            self.report.reexamined = len(self.seen | set(absent))
            self.report.absences += later.absences
            self.report.state_changes += later.inserted - later.absences
            self._mark_stale(changed)

    def _check_persons_exist(self, person_ids: set[int]) -> None:
        """Persons known only through their states (absences, members who left) must still exist."""
        missing = set(person_ids)
        for chunk in _chunks(sorted(person_ids), 5000):
            missing.difference_update(
                self.conn.execute(select(T_PERSONS.c.id).where(one_of(self.conn, T_PERSONS.c.id, chunk))).scalars()
            )
        if missing:
            raise ReferenceIntegrityError(f"{len(missing)} person(s) with states are missing from persons")

    def _present_in_organisme(self) -> dict[int, dict[str, Any]]:
        """Persons whose state in force before this full file is present in a foyer of its organisme (the
        file's own rows left out: only persons it did not carry matter here, and they have none)."""
        assert self.header is not None
        ps = T_STATES.c
        ranked = (
            select(
                ps.person_id,
                *[ps[c] for c in STATE_COLUMNS],
                func.row_number()
                .over(
                    partition_by=ps.person_id,
                    order_by=state_order(ps, descending=True),
                )
                .label("rn"),
            )
            .where(ps.departement_code == self.departement, self._up_to_here(inclusive=False))
            .subquery()
        )
        query = select(ranked).where(ranked.c.rn == 1, ranked.c.present.is_(True), ranked.c.fonorg == self.fonorg)
        if self.numorg:
            query = query.where(ranked.c.numorg == self.numorg)
        return {row["person_id"]: dict(row) for row in self.conn.execute(query).mappings()}


OBSERVATION_COLUMNS = (
    "file_id",
    "seq",
    "person_id",
    "fonorg",
    "numorg",
    "matricule",
    "fingerprint",
    "missing_blocks",
    "sdd_entrant",
)
PERSON_COLUMNS = (
    "id",
    "departement_code",
    "nir_hash",
    "nir_encrypted",
    "qual",
    "nom",
    "nomnai",
    "prenom",
    "date_naissance",
    "sexe",
    "stock",
    "first_file_id",
    "first_received_on",
    "updated_file_id",
)


def _chunks(values: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


def _organisme_of(header: FluxHeader, first: Prepared | None) -> tuple[str | None, str | None]:
    if first is not None and first.fonorg:
        return first.fonorg, first.numorg
    return {"CRI": "CAF", "AGO": "MSA"}.get(header.applieme), None


@contextmanager
def _lighter_collections() -> Iterator[None]:
    """An ingestion allocates millions of short-lived tuples, and each full pass of the cyclic garbage
    collector would also walk every object the process already held (modules, metadata, caches). Those are
    set aside (`gc.freeze`) while a file is applied: ~8 % of the loader's time on PostgreSQL, the same
    memory. (Spacing collections out instead saved as much but grew the peak with the file: measured,
    bench/BENCHMARKS.md run 9.)"""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _lock(conn: Connection) -> None:
    """One ingestion at a time, announced as a writer from its first statement; no statement time limit
    (a monthly file is one long transaction)."""
    if conn.dialect.name == "postgresql":
        unlimited_statements(conn)
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _INGEST_LOCK_ID})
    else:
        claim_write(conn)


def _next_person_base(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(T_PERSONS.c.id), 0))).scalar_one())


INGESTED_BY_JOB = {"cli": "job:flux ingest", "watch": "job:flux watch", "demo": "job:demo"}


def ingest_file(
    engine: Engine,
    settings: Settings,
    path: Path,
    options: IngestOptions,
    progress: ProgressCallback | None = None,
    *,
    refresh: bool = True,
    refresh_progress: Callable[[int, int], None] | None = None,
) -> IngestReport:
    """Apply one flux file, then (`refresh`) the entry episodes of the persons it changed. Returns its
    report; never raises for a bad file (status `rejected`). Each file, whatever became of it, is an audit
    event (`flux.ingest`: who, the file's id, its status and counts).

    Raises `IngestInputError` for a wrong option (département, --initial-stock, reception date).
    """
    from app.audit.chain import record_action_now

    report = _ingest_file(engine, settings, path, options, progress, refresh=refresh, refresh_progress=refresh_progress)
    by = options.ingested_by or "job:flux ingest"
    record_action_now(
        engine,
        INGESTED_BY_JOB.get(by, by),
        "flux.ingest",
        report.departement or options.departement,
        outcome="rejected" if report.status == "rejected" else "ok",
        detail={
            "file_id": report.file_id,
            "status": report.status,
            "type_flux": report.type_flux,
            "persons": report.persons_read,
            "new_persons": report.new_persons,
            "state_changes": report.state_changes,
            "duplicate_of": report.duplicate_of,
        },
    )
    return report


def _ingest_file(
    engine: Engine,
    settings: Settings,
    path: Path,
    options: IngestOptions,
    progress: ProgressCallback | None = None,
    *,
    refresh: bool = True,
    refresh_progress: Callable[[int, int], None] | None = None,
) -> IngestReport:
    started = time.perf_counter()
    name = options.display_name or path.name
    report = IngestReport(status="applied", filename=name, received_on=options.received_on.isoformat())
    if options.departement is not None and not DEPARTEMENT_RE.match(options.departement):
        raise IngestInputError(f"invalid département {options.departement!r}")
    if options.received_on > today(settings):
        raise IngestInputError(f"the reception date {options.received_on} is in the future")
    raw_sha, size = file_sha256(path)

    # The same bytes received by two départements are two receptions (an empty daily file is the same for
    # every département of a CAF): a duplicate is only ever one of the same département. Before parsing,
    # that is known when given or when only one département is served; otherwise the check on the content,
    # inside the transaction, decides.
    with engine.connect() as conn:
        dep = options.departement
        if dep is None:
            known = conn.execute(select(T_DEPARTEMENTS.c.code).limit(2)).scalars().all()
            dep = known[0] if len(known) == 1 else None
        dup = (
            conn.execute(
                select(T_FILES.c.id).where(
                    T_FILES.c.file_sha256 == raw_sha, T_FILES.c.status == "applied", T_FILES.c.departement_code == dep
                )
            ).first()
            if dep is not None
            else None
        )
    if dup is not None:
        report.status = "duplicate"
        report.duplicate_of = dup[0]
        report.duration_ms = int((time.perf_counter() - started) * 1000)
        return report

    if peek_nature(path) == "I":
        # an instruction flux: contacts, DSP, parcours of demands being instructed; never a beneficiary flux
        try:
            return _ingest_instruction(engine, settings, path, name, raw_sha, size, options, report, started)
        except _Duplicate as dup_exc:
            return IngestReport(
                status="duplicate",
                filename=name,
                received_on=options.received_on.isoformat(),
                nature="I",
                duplicate_of=dup_exc.file_id,
                duration_ms=int((time.perf_counter() - started) * 1000),
            )
        except FluxRejected as exc:
            return _record_rejection(engine, settings, path, name, raw_sha, size, options, report, exc, started)

    try:
        with _lighter_collections(), engine.begin() as conn:
            _lock(conn)
            ft = T_FILES
            file_id = _insert_applying(conn, name, size, raw_sha, options, "D")
            job = _Ingestion(conn, settings, file_id, options, report)
            started_job = False
            source = open_source(
                path, BATCH_FOYERS, settings.hmac_key, options.parallel, settings.ingest_parallel_min_bytes
            )
            try:
                for batch in source.batches():
                    if not started_job:
                        _start(conn, job, source.header, Prepared.named(batch[0]) if batch else None, options, report)
                        started_job = True
                    if batch:
                        job.apply_batch(batch)
                    if progress:
                        progress(job.report.foyers, source.bytes_read)
            finally:
                source.close()
            job.finish()

            content_sha = source.content_sha256
            same = conn.execute(
                select(ft.c.id).where(
                    ft.c.departement_code == job.departement,
                    ft.c.content_sha256 == content_sha,
                    ft.c.status == "applied",
                )
            ).first()
            if same is not None:
                raise _Duplicate(same[0])
            report.file_id = file_id
            report.duration_ms = int((time.perf_counter() - started) * 1000)
            conn.execute(
                update(ft)
                .where(ft.c.id == file_id)
                .values(
                    status="applied",
                    content_sha256=content_sha,
                    foyers=report.foyers,
                    persons=report.persons_brsa,
                    warnings=report.warnings_count,
                    rejected_records=report.rejected_count,
                    duration_ms=report.duration_ms,
                    report=report.to_dict(),
                )
            )
    except _Duplicate as dup_exc:
        report = IngestReport(
            status="duplicate",
            filename=name,
            received_on=options.received_on.isoformat(),
            duplicate_of=dup_exc.file_id,
            duration_ms=int((time.perf_counter() - started) * 1000),
        )
        return report
    except FluxRejected as exc:
        return _record_rejection(engine, settings, path, name, raw_sha, size, options, report, exc, started)
    except IntegrityError as exc:
        # Two concurrent ingestions of the same content: the second is a duplicate.
        if "uq_flux_files_applied_content" in str(exc.orig):
            return IngestReport(status="duplicate", filename=name, received_on=options.received_on.isoformat())
        raise
    log.info(
        "flux_applied",
        file_id=report.file_id,
        departement=report.departement,
        foyers=report.foyers,
        persons=report.persons_brsa,
        new_persons=report.new_persons,
        state_changes=report.state_changes,
        warnings=report.warnings_count,
        rejected=report.rejected_count,
        duration_ms=report.duration_ms,
    )
    _rematch_webhooks(settings, report)
    if refresh:
        refresh_after_commit(engine, report, refresh_progress)
    return report


def _rematch_webhooks(settings: Settings, report: IngestReport) -> None:
    """Partners' events received for persons unknown then (app.integrations.rdv_insertion.webhooks): this file may have
    brought them. After the commit; if it fails, they stay waiting for the next file."""
    from app.integrations.rdv_insertion.webhooks import rematch

    if report.departement is None:
        return
    try:
        report.webhook_events_matched = rematch(settings, report.departement)
    except SQLAlchemyError as exc:
        log.error("webhook_rematch_failed", file_id=report.file_id, error_type=type(exc).__name__)


def refresh_after_commit(engine: Engine, report: IngestReport, progress: Callable[[int, int], None] | None) -> None:
    """The file is committed; bring the entry episodes of the persons it changed up to date. If this fails
    (database gone, busy beyond the timeout), the file stays applied and its persons stay queued: the
    report says so and what to re-run, and the next refresh (any writer's, or `passerelle episodes
    refresh`) takes them."""
    from app.orientation.episodes import refresh_pending

    started = time.perf_counter()
    try:
        report.episodes_refreshed = refresh_pending(engine, progress)
    except (SQLAlchemyError, OSError) as exc:
        report.episodes_error = (
            f"updating the entry episodes after the commit failed ({type(exc).__name__}): the file stays applied "
            "and its persons stay queued; run `passerelle episodes refresh`"
        )
        log.error("episodes_refresh_failed", file_id=report.file_id, error_type=type(exc).__name__)
    report.episodes_ms = int((time.perf_counter() - started) * 1000)


class _Duplicate(Exception):
    def __init__(self, file_id: int) -> None:
        super().__init__(file_id)
        self.file_id = file_id


def _start(
    conn: Connection,
    job: _Ingestion,
    header: FluxHeader | None,
    first: Prepared | None,
    options: IngestOptions,
    report: IngestReport,
) -> None:
    """Once the header (and the first foyer) is known: check the options against the file."""
    assert header is not None
    job.header = header
    job.created_at = header.created_at.replace(tzinfo=UTC)
    fonorg, numorg = job.fonorg, job.numorg = _organisme_of(header, first)
    report.organisme = " ".join(x for x in (fonorg, numorg) if x) or None
    report.type_flux = header.type_flux
    report.created_at_caf = header.created_at.isoformat()
    report.initial_stock = options.initial_stock
    file_dep = first.departement if first is not None else None
    dep = options.departement
    if dep is None:
        if file_dep and DEPARTEMENT_RE.match(file_dep):
            dep = file_dep
        else:
            known = conn.execute(select(T_DEPARTEMENTS.c.code)).scalars().all()
            if len(known) != 1:
                raise IngestInputError(
                    "cannot tell the département of this file (no foyer): give it with --departement"
                )
            dep = known[0]
    elif file_dep and file_dep != dep:
        raise FluxRejected(
            f"this file is for département {file_dep[:3]!r}, not {dep}",
            f"foyer 1 (line {first.line if first else 0})",
            "other_departement",
        )
    job.departement = dep
    report.departement = dep
    if conn.execute(select(T_DEPARTEMENTS.c.code).where(T_DEPARTEMENTS.c.code == dep)).first() is None:
        conn.execute(insert(T_DEPARTEMENTS).values(code=dep, created_at=datetime.now(UTC)))
    if header.created_at.date() > options.received_on:
        raise IngestInputError(
            f"the reception date {options.received_on} is before the file's creation date {header.created_at.date()}"
        )
    ft = T_FILES.c
    earlier = conn.execute(
        select(func.count())
        .select_from(T_FILES)
        .where(ft.departement_code == dep, ft.status == "applied", ft.fonorg == fonorg, ft.nature == "D")
    ).scalar_one()
    if options.initial_stock:
        if header.type_flux == "I":
            raise IngestInputError("--initial-stock applies to a monthly (M) or reprise (R) file, not a daily one")
        if earlier:
            raise IngestInputError(
                f"département {dep} already has {earlier} applied file(s) from {fonorg}: "
                "the initial stock is the first load"
            )
    elif not earlier:
        job._warn(
            "no_initial_stock",
            f"first file from {fonorg} for département {dep} without --initial-stock: "
            "everyone in it who meets the criteria counts as a nouvel entrant",
        )
    conn.execute(
        update(T_FILES)
        .where(ft.id == job.file_id)
        .values(
            departement_code=dep,
            applieme=header.applieme,
            fonorg=fonorg,
            numorg=numorg,
            type_flux=header.type_flux,
            created_at_caf=job.created_at,
            dtref=header.dtref,
        )
    )


def _insert_applying(conn: Connection, name: str, size: int, raw_sha: str, options: IngestOptions, nature: str) -> int:
    """The file's row while it is being applied (inside its transaction: gone if it fails)."""
    ft = T_FILES
    return int(
        conn.execute(
            insert(ft)
            .values(
                filename=name[:255],
                size_bytes=size,
                file_sha256=raw_sha,
                status="applying",
                nature=nature,
                received_on=options.received_on,
                initial_stock=options.initial_stock and nature == "D",
                ingested_by=options.ingested_by,
                started_at=datetime.now(UTC),
                report={},
            )
            .returning(ft.c.id)
        ).scalar_one()
    )


def _ingest_instruction(
    engine: Engine,
    settings: Settings,
    path: Path,
    name: str,
    raw_sha: str,
    size: int,
    options: IngestOptions,
    report: IngestReport,
    started: float,
) -> IngestReport:
    """An instruction flux, in one transaction like a beneficiary file (app.flux.instruction)."""
    from app.flux.instruction import InstructionReader, apply_instruction

    report.nature = "I"
    if options.initial_stock:
        raise IngestInputError("--initial-stock applies to a beneficiary flux, not to an instruction flux")
    reader = InstructionReader(path, settings.hmac_key)
    ft = T_FILES
    with engine.begin() as conn:
        _lock(conn)
        file_id = _insert_applying(conn, name, size, raw_sha, options, "I")
        outcome = apply_instruction(conn, reader, file_id, options.departement, options.received_on)
        assert reader.header is not None and outcome.departement is not None
        dep = outcome.departement
        if options.departement is not None and dep != options.departement:
            raise IngestInputError(f"this file is for département {dep}, not {options.departement}")
        if not DEPARTEMENT_RE.match(dep):
            raise FluxRejected(f"invalid département {dep!r} (IDEPARTE)", None, "other_departement")
        if conn.execute(select(T_DEPARTEMENTS.c.code).where(T_DEPARTEMENTS.c.code == dep)).first() is None:
            conn.execute(insert(T_DEPARTEMENTS).values(code=dep, created_at=datetime.now(UTC)))
        conn.execute(update(T_INSTRUCTION).where(T_INSTRUCTION.c.file_id == file_id).values(departement_code=dep))
        same = conn.execute(
            select(ft.c.id).where(
                ft.c.departement_code == dep, ft.c.content_sha256 == reader.content_sha256, ft.c.status == "applied"
            )
        ).first()
        if same is not None:
            raise _Duplicate(same[0])
        report.file_id = file_id
        report.departement = dep
        report.type_flux = reader.header.type_flux
        report.created_at_caf = reader.header.created_at.isoformat()
        report.foyers = outcome.demands
        report.persons_brsa = outcome.persons
        report.instruction_attached = outcome.attached
        report.instruction_kept_aside = outcome.kept_aside
        for severity, code, message in outcome.problems:
            (report.warn if severity == WARNING else report.reject)(code, message)
        report.duration_ms = int((time.perf_counter() - started) * 1000)
        conn.execute(
            update(ft)
            .where(ft.c.id == file_id)
            .values(
                departement_code=dep,
                status="applied",
                content_sha256=reader.content_sha256,
                applieme=reader.header.applieme,
                type_flux=reader.header.type_flux,
                created_at_caf=reader.header.created_at.replace(tzinfo=UTC),
                foyers=outcome.demands,
                persons=outcome.persons,
                warnings=report.warnings_count,
                rejected_records=report.rejected_count,
                duration_ms=report.duration_ms,
                report=report.to_dict(),
            )
        )
    log.info(
        "instruction_flux_applied",
        file_id=file_id,
        departement=dep,
        demands=outcome.demands,
        persons=outcome.persons,
        attached=outcome.attached,
        kept_aside=outcome.kept_aside,
        contact_problems=outcome.contact_problems,
    )
    return report


def _record_rejection(
    engine: Engine,
    settings: Settings,
    path: Path,
    name: str,
    raw_sha: str,
    size: int,
    options: IngestOptions,
    report: IngestReport,
    exc: FluxRejected,
    started: float,
) -> IngestReport:
    # A parser's message may quote hundreds of bytes of the file (lxml repeats a broken start tag): bounded,
    # so that the rejection is always recorded (the column holds 1,000 characters) and stays readable.
    reason = exc.reason if len(exc.reason) <= MAX_REASON else exc.reason[: MAX_REASON - 1] + "…"
    rejected = IngestReport(
        status="rejected",
        filename=name,
        received_on=options.received_on.isoformat(),
        departement=options.departement or report.departement or _file_departement(exc.departement),
        organisme=report.organisme,
        type_flux=report.type_flux,
        initial_stock=options.initial_stock,
        foyers=max(report.foyers, exc.foyers_read),
        error_code=exc.code,
        error=reason,
        error_position=exc.position,
        duration_ms=int((time.perf_counter() - started) * 1000),
    )
    # The copy holds NIRs in clear: mode 600 in a directory mode 700 (docs/operations.md, retention).
    quarantine = private_dir(settings.data_dir / "quarantine")
    target = quarantine / f"{raw_sha[:12]}-{Path(name).name}"
    try:
        copy_private(path, target)
        rejected.quarantine_path = str(target)
    except OSError as copy_exc:
        log.error("quarantine_copy_failed", error_type=type(copy_exc).__name__)
    write_private_text(quarantine / f"{target.name}.report.json", _json(rejected.to_dict()))
    with engine.begin() as conn:
        dep = rejected.departement
        if (
            dep is not None
            and conn.execute(select(T_DEPARTEMENTS.c.code).where(T_DEPARTEMENTS.c.code == dep)).first() is None
        ):
            dep = None
        rejected.file_id = conn.execute(
            insert(T_FILES)
            .values(
                departement_code=dep,
                filename=name[:255],
                size_bytes=size,
                file_sha256=raw_sha,
                status="rejected",
                error_code=exc.code,
                error=(reason + (f" (at {exc.position})" if exc.position else ""))[:1000],
                received_on=options.received_on,
                initial_stock=options.initial_stock,
                ingested_by=options.ingested_by,
                started_at=datetime.now(UTC),
                duration_ms=rejected.duration_ms,
                quarantine_path=rejected.quarantine_path,
                report=rejected.to_dict(),
            )
            .returning(T_FILES.c.id)
        ).scalar_one()
    log.warning("flux_rejected", file_id=rejected.file_id, error_code=exc.code, position=exc.position)
    return rejected


def _file_departement(value: str | None) -> str | None:
    """The département a rejected file's first foyer named (IDEPARTE may carry more than 3 characters)."""
    code = (value or "")[:3]
    return code if DEPARTEMENT_RE.match(code) else None


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, default=str)
