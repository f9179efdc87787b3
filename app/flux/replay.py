"""Puts a late file in its place among the dated facts: re-examines what the files dated after it said.

The stored facts must not depend on the order files arrive in (docs/rules.md, "Order of arrival"). A
file is applied against the state in force *at its date*; when files dated after it were applied first,
what they said of the persons it speaks of may mean something else now:

- a record that changed nothing then (no state row) may change something now, and one that did may not;
- a record lacking blocks keeps what was in force, which this file may have changed;
- a person this file puts in a foyer is "gone from it" at a later file that carries the foyer without them,
  and "absent" from a later full file of their organisme that does not carry them — or no longer is.

So for each such person the facts dated after this file are recomputed from what every later file said
(`flux_observations`: each record's state fingerprint, foyer and missing blocks) and the files' kinds,
exactly as the loader would have applied those files in date order; the rows that differ are replaced.
In the usual case — files arrive in date order — there is no later file and nothing to do.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from operator import attrgetter
from typing import Any, NamedTuple, cast

from sqlalchemy import Connection, Table, bindparam, delete, select, update

from app.db import one_of
from app.flux.derive import ROW_COLUMNS, STATE_COLUMNS, State, absent_state, fingerprint, keep_known
from app.models import FluxFile, FluxObservation, PersonState
from app.persons.order import FileKey, file_key, file_order, files_after, state_order

FULL_FILES = ("M", "R")  # a full file carries everyone its organisme pays
ABSENCE_RANK = 10_000_000  # `seq` of absence rows: after every record of their file

T_FILES = cast(Table, FluxFile.__table__)
T_OBS = cast(Table, FluxObservation.__table__)
T_STATES = cast(Table, PersonState.__table__)
CHUNK = 1000
_state_of = attrgetter(*STATE_COLUMNS)  # the state's values (STATE_COLUMNS order) of a stored state row
_PRESENT = STATE_COLUMNS.index("present")
_SDD_ENTRANT = STATE_COLUMNS.index("sdd_entrant")


class LaterFile(NamedTuple):
    id: int
    received_on: date
    created_at: datetime
    type_flux: str
    fonorg: str | None
    numorg: str | None


class Carried(NamedTuple):
    """A later file carries this foyer (a record of someone who was ever in it)."""

    file_id: int
    fonorg: str | None
    numorg: str | None
    matricule: str | None


class NewState(NamedTuple):
    """A person_states row `_walk` recomputes: the later file it is dated by, its rank there, the state."""

    person_id: int
    file_id: int
    departement_code: str
    received_on: date
    file_created_at: datetime
    seq: int
    type_flux: str
    state: State  # STATE_COLUMNS order
    fingerprint: str

    @property
    def sdd_entrant(self) -> Any:
        return self.state[_SDD_ENTRANT]

    @property
    def absent(self) -> bool:
        return self.state[_PRESENT] is False

    def values(self) -> tuple[Any, ...]:
        """The row in ROW_COLUMNS order, for the writer."""
        head = (self.person_id, self.file_id, self.departement_code, self.received_on, self.file_created_at)
        return (*head, self.seq, self.type_flux, *self.state, self.fingerprint)


# NewState.values() writes ROW_COLUMNS: the state's columns between the row's head and its fingerprint
assert (*NewState._fields[:-2], *STATE_COLUMNS, "fingerprint") == ROW_COLUMNS


class ReplayError(RuntimeError):
    """The stored observations do not match the stored states (a database altered by hand)."""


def _iso(state: Sequence[Any]) -> State:
    return tuple(v.isoformat() if isinstance(v, date) else v for v in state)


class Replay:
    def __init__(self, conn: Connection, writer: Any, departement: str, key: FileKey, type_flux: str) -> None:
        self.conn = conn
        self.writer = writer
        self.departement = departement
        self.key = key
        ft = T_FILES.c
        self.files = [
            LaterFile(*row)
            for row in conn.execute(
                select(ft.id, ft.received_on, ft.created_at_caf, ft.type_flux, ft.fonorg, ft.numorg)
                .where(
                    ft.departement_code == departement,
                    ft.status == "applied",
                    ft.nature == "D",
                    files_after(ft, key, type_flux),
                )
                .order_by(*file_order(ft))
            )
        ]
        self.inserted = 0
        self.deleted = 0
        self.absences = 0

    def _after(self, row: Any) -> bool:
        return file_key(row.received_on, row.file_created_at, row.type_flux, row.file_id) > self.key

    def run(self, person_ids: Iterable[int]) -> set[int]:
        """Recompute these persons' facts dated after the file; returns those whose facts changed."""
        changed: set[int] = set()
        if not self.files:
            return changed
        ids = sorted(set(person_ids))
        for start in range(0, len(ids), CHUNK):
            changed |= self._chunk(ids[start : start + CHUNK])
        return changed

    def _chunk(self, person_ids: Sequence[int]) -> set[int]:
        rows, matricules = self._histories(person_ids)
        observed, carried = self._later_observations(person_ids, matricules)
        changed: set[int] = set()
        inserts: list[NewState] = []
        deletes: list[int] = []
        fingerprint_updates: list[dict[str, Any]] = []
        for pid in person_ids:
            history = rows.get(pid, [])
            before = [r for r in history if not self._after(r)]
            after = [r for r in history if self._after(r)]
            content = {r.fingerprint: _iso(_state_of(r)) for r in history}
            new_states = self._walk(pid, before, observed.get(pid, {}), carried, content, fingerprint_updates)
            old = [(r.file_id, r.fingerprint, r.sdd_entrant) for r in after]
            new = [(s.file_id, s.fingerprint, s.sdd_entrant) for s in new_states]
            if old != new:
                changed.add(pid)
                deletes.extend(r.id for r in after)
                inserts.extend(new_states)
        self._write(deletes, inserts, fingerprint_updates)
        return changed

    def _histories(self, person_ids: Sequence[int]) -> tuple[dict[int, list[Any]], set[str]]:
        """Every state row of these persons, in date order, and the foyers (matricules) they were in."""
        conn = self.conn
        ps = T_STATES.c
        rows: dict[int, list[Any]] = {}
        matricules: set[str] = set()
        for row in conn.execute(
            select(
                ps.id,
                ps.person_id,
                ps.file_id,
                ps.received_on,
                ps.file_created_at,
                ps.seq,
                ps.type_flux,
                *[ps[c] for c in STATE_COLUMNS],
                ps.fingerprint,
            )
            .where(one_of(conn, ps.person_id, person_ids))
            .order_by(ps.person_id, *state_order(ps))
        ):
            rows.setdefault(row.person_id, []).append(row)
            if row.matricule:
                matricules.add(row.matricule)
        return rows, matricules

    def _later_observations(
        self, person_ids: Sequence[int], matricules: set[str]
    ) -> tuple[dict[int, dict[int, list[Any]]], set[Carried]]:
        """What the later files observed of these persons (by file), and which of their foyers each later
        file carries (file, fonorg, numorg, matricule), from the records of everyone ever in them."""
        conn = self.conn
        ps = T_STATES.c
        members: set[int] = set(person_ids)
        for chunk in _chunks(sorted(matricules), 5000):
            members.update(
                conn.execute(
                    select(ps.person_id)
                    .where(ps.departement_code == self.departement, one_of(conn, ps.matricule, chunk))
                    .distinct()
                ).scalars()
            )
        later_ids = [f.id for f in self.files]
        o = T_OBS.c
        observed: dict[int, dict[int, list[Any]]] = {}
        carried: set[Carried] = set()
        mine = set(person_ids)
        for chunk in _chunks(sorted(members), 5000):
            for obs in conn.execute(
                select(
                    o.file_id,
                    o.seq,
                    o.person_id,
                    o.fonorg,
                    o.numorg,
                    o.matricule,
                    o.fingerprint,
                    o.missing_blocks,
                    o.sdd_entrant,
                )
                .where(one_of(conn, o.person_id, chunk), one_of(conn, o.file_id, later_ids))
                .order_by(o.file_id, o.seq)
            ):
                if obs.matricule in matricules:
                    carried.add(Carried(obs.file_id, obs.fonorg, obs.numorg, obs.matricule))
                if obs.person_id in mine:
                    observed.setdefault(obs.person_id, {}).setdefault(obs.file_id, []).append(obs)
        return observed, carried

    def _write(self, deletes: list[int], inserts: list[NewState], fingerprint_updates: list[dict[str, Any]]) -> None:
        """The later states re-examined: the old ones deleted, the new ones inserted, observations re-printed."""
        conn = self.conn
        for chunk in _chunks(deletes, 5000):
            conn.execute(delete(T_STATES).where(one_of(conn, T_STATES.c.id, chunk)))
        self.deleted += len(deletes)
        self.inserted += self.writer.insert(T_STATES, ROW_COLUMNS, [s.values() for s in inserts])
        self.absences += sum(1 for s in inserts if s.absent)
        if fingerprint_updates:
            o = T_OBS.c
            conn.execute(
                update(T_OBS)
                .where(o.file_id == bindparam("b_file"), o.seq == bindparam("b_seq"))
                .values(fingerprint=bindparam("b_print")),
                fingerprint_updates,
            )

    def _walk(
        self,
        pid: int,
        before: list[Any],
        observed: dict[int, list[Any]],
        carried: set[Carried],
        content: dict[str, State],
        fingerprint_updates: list[dict[str, Any]],
    ) -> list[NewState]:
        """The person's rows after the file, as the later files would have been applied in date order."""
        in_force: dict[str, Any] | None = None
        print_: str | None = None
        if before:
            last = before[-1]
            in_force = dict(zip(STATE_COLUMNS, _state_of(last), strict=True))
            print_ = last.fingerprint
        out: list[NewState] = []
        absences = 0
        for f in self.files:
            head = (pid, f.id, self.departement, f.received_on, f.created_at)  # NewState's first fields
            records = observed.get(f.id)
            if records:
                for obs in records:
                    base = content.get(obs.fingerprint)
                    if base is None:
                        raise ReplayError(
                            f"person {pid}: the record of file {f.id} (rank {obs.seq}) has no stored state to refer to"
                        )
                    state = (*base[:-1], obs.sdd_entrant)
                    if obs.missing_blocks and in_force is not None and in_force["present"]:
                        state = keep_known(state, obs.missing_blocks, in_force)
                    now = fingerprint(state)
                    if now != obs.fingerprint:
                        content[now] = state
                        fingerprint_updates.append({"b_file": f.id, "b_seq": obs.seq, "b_print": now})
                    if now != print_:
                        out.append(NewState(*head, obs.seq, f.type_flux, state, now))
                        in_force, print_ = dict(zip(STATE_COLUMNS, state, strict=True)), now
                continue
            if in_force is None or not in_force["present"]:
                continue
            foyer = (in_force["fonorg"], in_force["numorg"], in_force["matricule"])
            if Carried(f.id, *foyer) in carried:
                reason = "left_foyer"
            elif (
                f.type_flux in FULL_FILES
                and f.fonorg == in_force["fonorg"]
                and (not f.numorg or f.numorg == in_force["numorg"])
            ):
                reason = "absent_full_file"
            else:
                continue
            state = absent_state(in_force, reason)
            now = fingerprint(state)
            absences += 1
            out.append(NewState(*head, ABSENCE_RANK + absences, f.type_flux, state, now))
            in_force, print_ = dict(zip(STATE_COLUMNS, state, strict=True)), now
        return out


def _chunks(values: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]
