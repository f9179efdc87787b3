"""Applies the foyers of one beneficiary flux file inside its transaction, batch after batch: screens
them, identifies their persons (app.flux.identity), writes the states that change what is in force and an
observation of every record; at the end of the file, the absences (members who left a foyer, persons a
full file no longer carries), the instruction records it may attach, and the replay of later files."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, text

from app.db import one_of
from app.flux.bulk import (
    OBSERVATION_COLUMNS,
    T_EVENTS,
    T_OBSERVATIONS,
    T_PERSONS,
    T_QUEUE,
    T_STATES,
    BulkWriter,
    chunks,
    sqlite_datetime,
)
from app.flux.derive import ROW_COLUMNS, STATE_COLUMNS, Prepared, State, absent_state, fingerprint, keep_known
from app.flux.identity import Accepted, IdentityMatcher, PersonRow, Resolved
from app.flux.instruction import attach_pending
from app.flux.reader import REJECT_FOYER, REJECT_PERSON
from app.flux.records import SENDER_OF_APPLIEME, FluxHeader
from app.flux.replay import ABSENCE_RANK, FULL_FILES, Replay
from app.flux.report import IngestOptions, IngestReport, ReferenceIntegrityError
from app.persons.order import FileKey, file_key, state_order, states_up_to
from app.security.nir import NirProtector
from app.settings import Settings


class Ingestion:
    """One beneficiary file being applied (`begin`, then `apply_batch` for each batch, then `finish`)."""

    def __init__(
        self,
        conn: Connection,
        settings: Settings,
        options: IngestOptions,
        report: IngestReport,
    ) -> None:
        self.conn = conn
        self.settings = settings
        self.file_id = 0  # the file's row, given with its département (`begin`)
        self.options = options
        self.report = report
        self.writer = BulkWriter(conn)
        self.departement: str | None = options.departement
        self.header: FluxHeader | None = None
        self.created_at: datetime | None = None
        self._created_at_row: datetime | str | None = None
        self.absence_seq = ABSENCE_RANK
        self.seen: set[int] = set()
        self.created_by_stock: set[int] = set()  # persons an initial stock creates (not queued: see _write_states)
        self.left_candidates: dict[int, dict[str, Any]] = {}
        self.fonorg: str | None = None
        self.numorg: str | None = None
        self._pending_events: list[tuple[Any, ...]] = []
        self.batches = 0
        self.table_rows_at_start: int | None = None
        self.identity: IdentityMatcher | None = None

    def begin(self, header: FluxHeader, departement: str, fonorg: str | None, numorg: str | None, file_id: int) -> None:
        """The file's header and département are known (app.flux.loader checked them and took the
        département's lock), its row written (`file_id`): its persons can be identified."""
        self.file_id = file_id
        self.header = header
        self.created_at = header.created_at.replace(tzinfo=UTC)
        self.departement = departement
        self.fonorg, self.numorg = fonorg, numorg
        self.identity = IdentityMatcher(
            self.conn,
            self.writer,
            NirProtector(self.settings.encryption_keys, self.settings.hmac_key),
            self.report,
            file_id=self.file_id,
            departement=departement,
            key=self.key,
            received_on=self.options.received_on,
            initial_stock=self.options.initial_stock,
            seen=self.seen,
        )

    @property
    def key(self) -> FileKey:
        """Where this file stands among the dated facts (app.persons.order)."""
        assert self.created_at is not None and self.header is not None
        return file_key(self.options.received_on, self.created_at, self.header.type_flux, self.file_id)

    def _warn(self, code: str, message: str) -> None:
        self.report.warn(code, message)

    def _reject(self, code: str, message: str) -> None:
        self.report.reject(code, message)

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
        for chunk in chunks(ids, 5000):
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
            # Holds the tables' SHARE UPDATE EXCLUSIVE lock (conflicting with itself) until this transaction
            # ends: a big file of another département analysing meanwhile waits for this one's commit (both
            # take the four tables in this order and wait for nothing else of each other: no cycle).
            # Skipping the ANALYZE instead was slower (plans without statistics; bench/BENCHMARKS.md, "Issue
            # #27 (second pass), one lock per département"). A daily file on a big database never gets here.
            self.conn.execute(text("ANALYZE persons, person_keys, person_states, flux_observations"))

    # one batch of foyers, in four phases -----------------------------------------------------

    def apply_batch(self, batch: list[tuple[Any, ...]]) -> None:
        assert self.identity is not None
        self._refresh_statistics()
        accepted = self._screen([Prepared.named(item) for item in batch])
        resolved, new_persons = self.identity.resolve(accepted)
        previous = self._detect_departures(resolved)
        self._write_states(resolved, new_persons, previous)
        self.report.persons_brsa += len(resolved)
        self._flush_events()

    def _check_sender(self, foyer: Prepared) -> None:
        """A foyer whose organisme (FONORG) is not the file's sender (APPLIEME: CRI, NRA, NRS are the CAF's,
        AGO the MSA's) is reported: the first one by its position, the others counted (the foyer is kept,
        under its own FONORG)."""
        assert self.header is not None
        sender = SENDER_OF_APPLIEME.get(self.header.applieme)
        if sender is None or foyer.fonorg is None or foyer.fonorg == sender:
            return
        self.report.sender_mismatches += 1
        if self.report.sender_mismatches == 1:
            self._warn(
                "sender_mismatch",
                f"foyer {foyer.position}: FONORG {foyer.fonorg} but the file was sent by APPLIEME "
                f"{self.header.applieme} ({sender}); kept under {foyer.fonorg} (further such foyers are counted "
                "in sender_mismatches)",
            )

    def _screen(self, foyers: list[Prepared]) -> list[Accepted]:
        """Count what was read; set aside rejected foyers and persons; keep the foyers' events."""
        dep = self.departement
        report = self.report
        accepted: list[Accepted] = []
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
            self._check_sender(foyer)
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
            accepted.append(Accepted((foyer.fonorg, foyer.numorg, foyer.matricule), foyer, identified))
            if foyer.events:
                self._pending_events.extend(
                    (self.file_id, dep, foyer.fonorg, foyer.numorg, foyer.matricule, d, fg[:12])
                    for d, fg in foyer.events
                )
        return accepted

    def _detect_departures(self, resolved: list[Resolved]) -> dict[int, dict[str, Any]]:
        """The states in force for these persons and for the members these foyers had; a member whose
        foyer is here without them left it (unless this file shows them elsewhere: decided in `finish`).
        A foyer is "here" when at least one of its persons is."""
        ps = T_STATES.c
        foyer_keys = {r.foyer for r in resolved}
        candidates: set[int] = set()
        matricules = sorted({m for _, _, m in foyer_keys if m})
        for chunk in chunks(matricules, 5000):
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
        self, resolved: list[Resolved], new_persons: list[PersonRow], previous: dict[int, dict[str, Any]]
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
        changed = {row[0] for row in rows} | {row.id for row in new_persons}
        if self.options.initial_stock:
            # A person the initial stock creates has one fact, the stock, and no event: no entry episode
            # to compute (app.rules.episodes.STOCK_ALONE_OPENS_NOTHING; asserted in tests/rules/test_rules.py).
            # Those with more than one state in this file are queued at its end (`finish`).
            self.created_by_stock.update(row.id for row in new_persons)
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
        if self._created_at_row is None:
            # as the driver would adapt it, once per file rather than once per row (SQLite: strftime)
            assert self.created_at is not None
            self._created_at_row = self.created_at if self.writer.postgres else sqlite_datetime(self.created_at)
        return (
            pid,
            self.file_id,
            self.departement,
            self.options.received_on,
            self._created_at_row,
            seq,
            self.header.type_flux,
            *state,
            print_,
        )

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
        for chunk in chunks(sorted(person_ids), 5000):
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
