"""The audit trail made tamper-evident (issue #14): every event (`access_records`) is sealed once, in order,
with a gapless number and an HMAC chained to the previous event's seal.

Writers never wait on the chain: a request, a job or a webhook inserts its events unsealed at its commit,
concurrently with the others. The sealer numbers them afterwards, in batches, under the chain's lock (the
`audit_chain` row: `FOR UPDATE` on PostgreSQL; on SQLite a first write to the audit journal, which takes its
lock before anything is read), so two sealers never fork the chain. The server seals every few seconds
(`audit_seal_interval_seconds`), the CLI's jobs at their end, `audit verify` and `audit anchor` first.

seal(n) = HMAC-SHA256(audit key, seal(n-1) + "\\n" + canonical JSON of (n, id, every column of the event,
its proof when it has one)).

Each event also carries, from the moment it is written, proof that the service wrote it (app.audit.proof,
issue #23): the sealer seals only events whose proof verifies, and reports the others (`unproven`), so a row
inserted by hand into the journal is never sealed; `verify` names them too. A purge that moves the chain's
base writes, in the same transaction, an `audit.purge` event naming the new base and the youngest event it
purged: `verify` refuses a base that no such event names, or one that moved past events younger than the
retention.
`verify` recomputes the chain and names each event that does not match its seal (modified, inserted or
moved), each gap in the numbers (deleted), and a head that is not the chain's last event (the latest ones
deleted); `anchor` gives the head to keep outside the database, and `verify --anchor` checks the chain still
reaches it with the same seal.

Events are written by `record_action` (an action: ingest, import, purge, key rotation, ...) and by the reads
of `app.persons.repository` (`audit_read`, `audit_job_reads`): who, what, which persons (our ids, never a NIR
or a name), purpose, when, outcome, request id, source address.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Engine, bindparam, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from app.audit.proof import CONTENT_COLUMNS, canonical, insert_events, proof_problem
from app.audit.reads import PENDING_ACCESS
from app.kit.jobs import pause
from app.models import AccessRecord, AuditChain
from app.models.base import utcnow
from app.settings import Settings

log = structlog.get_logger(__name__)

SEAL_BATCH = 2000
KNOWN_UNPROVEN_MAX = 100_000  # unproven ids a server's sealer remembers, so as not to check and log them again
AUDIT_PURGE = "audit.purge"  # written by the purge as it moves the chain's base, naming the new base
AUDIT_RETENTION_MIN_DAYS = 183  # the least `audit_retention_days` allows (app.settings)
OUTCOMES = ("ok", "not_found", "refused", "rejected", "error")
ALL_DEPARTEMENTS = "*"  # an action that concerns no one département (a key rotation, a purge of all)


# -- writing events ---------------------------------------------------------------------------------------


def action_row(
    principal_id: str,
    action: str,
    departement: str | None,
    *,
    outcome: str = "ok",
    detail: dict[str, Any] | None = None,
    person_id: int | None = None,
    endpoint: str | None = None,
    agent: str | None = None,
    request_id: str | None = None,
    purpose: str | None = None,
    source_address: str | None = None,
) -> dict[str, Any]:
    """One audit event for an action. `detail`: counts, file ids, week labels; never personal data."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown audit outcome {outcome!r}")
    if request_id is None:  # the request or job this happens in (app.api.middleware binds it to the logs)
        request_id = structlog.contextvars.get_contextvars().get("request_id")
    return {
        "at": utcnow(),
        "principal_id": principal_id[:120],
        "agent_identifiant": agent,
        "departement_code": (departement or ALL_DEPARTEMENTS)[:3],
        "person_id": person_id,
        "action": action[:40],
        "endpoint": (endpoint or action)[:200],
        "request_id": request_id,
        "found": outcome != "not_found",
        "purpose": purpose,
        "source_address": source_address,
        "outcome": outcome,
        "detail": json.dumps(detail, ensure_ascii=False, sort_keys=True, default=str)[:500] if detail else None,
    }


def record_action(session: Session, principal_id: str, action: str, departement: str | None, **kw: Any) -> None:
    """Record an action with the unit of work that does it: written at its commit, gone with its rollback."""
    session.info.setdefault(PENDING_ACCESS, []).append(action_row(principal_id, action, departement, **kw))


def record_action_now(engine: Engine, principal_id: str, action: str, departement: str | None, **kw: Any) -> None:
    """Record an action in a transaction of its own: for what did not commit (a rejected file, a refused
    call) or happened outside any unit of work. Never raises: the caller's own error matters more."""
    try:
        with engine.begin() as conn:
            insert_events(conn, [action_row(principal_id, action, departement, **kw)])
    except Exception as exc:  # pragma: no cover - the database is gone: the caller reports its own failure
        log.error("audit_event_lost", action=action, error_type=type(exc).__name__)


def job_principal(command: str) -> str:
    return f"job:{command}"[:120]


# -- the seal ---------------------------------------------------------------------------------------------


def event_seal(key: bytes, previous: str, seq: int, values: dict[str, Any]) -> str:
    """The proof is sealed too (so it cannot be taken away), when there is one: the events sealed before
    events carried proofs keep their seals."""
    proof = [values["proof"]] if values.get("proof") else []
    body = json.dumps([seq, *(canonical(values[c]) for c in CONTENT_COLUMNS), *proof], ensure_ascii=False,
                      separators=(",", ":"))  # fmt: skip
    return hmac.new(key, f"{previous}\n{body}".encode(), hashlib.sha256).hexdigest()


class Sealed(int):
    """How many events `seal` sealed; `unproven`: how many it left unsealed because their proof does not
    verify (the service did not write them)."""

    unproven: int

    def __new__(cls, sealed: int, unproven: int = 0) -> Sealed:
        obj = super().__new__(cls, sealed)
        obj.unproven = unproven
        return obj


def _legacy_head(session: Session, chain: AuditChain, keys: dict[str, bytes]) -> bool:
    """True while the chain's last event was sealed before events carried proofs (migration 0021): the
    events written before the upgrade are then sealed without one, until the first proven event is. The
    head is trusted only if its seal verifies (taking its proof away does not reopen that door)."""
    if chain.head_seq <= chain.base_seq:
        return False
    columns = [getattr(AccessRecord, c) for c in (*CONTENT_COLUMNS, "seq", "key_id", "mac", "proof")]
    rows = {
        r.seq: r._asdict()
        for r in session.execute(select(*columns).where(AccessRecord.seq.in_([chain.head_seq - 1, chain.head_seq])))
    }
    head = rows.get(chain.head_seq)
    if head is None or head["proof"] is not None or head["mac"] != chain.head_mac:
        return False
    previous = (
        chain.base_mac if chain.head_seq - 1 == chain.base_seq else (rows.get(chain.head_seq - 1) or {}).get("mac")
    )
    key = keys.get(head["key_id"] or "")
    return bool(
        key and previous is not None and hmac.compare_digest(event_seal(key, previous, head["seq"], head), head["mac"])
    )


def lock_chain(session: Session) -> AuditChain:
    """Take the chain's lock (waiting for another sealer) and return its state, created if missing. On
    SQLite the first statement writes, so the audit journal's write lock is taken before anything is read."""
    empty = {"id": 1, "head_seq": 0, "head_mac": "", "base_seq": 0, "base_mac": ""}
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("INSERT OR IGNORE INTO audit.audit_chain (id, head_seq, head_mac, base_seq, base_mac) "
                             "VALUES (:id, :head_seq, :head_mac, :base_seq, :base_mac)"), empty)  # fmt: skip
    else:
        session.execute(pg_insert(AuditChain).values(**empty).on_conflict_do_nothing())
    chain = session.scalar(select(AuditChain).where(AuditChain.id == 1).with_for_update())
    assert chain is not None
    return chain


def seal(engine: Engine, settings: Settings, batch: int = SEAL_BATCH, known_unproven: set[int] | None = None) -> Sealed:
    """Seal every unsealed event whose proof verifies, oldest id first, in batches of `batch` (one
    transaction each). An unproven event is left unsealed and reported (logged, counted in `unproven`);
    the events after it are sealed all the same, so no inserted row holds the chain up. `known_unproven`
    (the server's sealer): ids found unproven before, not checked nor logged again; the new ones are added
    (up to `KNOWN_UNPROVEN_MAX`)."""
    skip = known_unproven if known_unproven is not None else set()
    ring = settings.audit_key_ring
    (key_id, key), keys = ring[0], dict(ring)
    sealed, unproven, after = 0, [], 0
    while True:
        with Session(engine) as session, session.begin():
            chain = lock_chain(session)
            legacy = _legacy_head(session, chain, keys)
            # rows, not ORM objects: sealing is the service's cost of every access record (issue #27)
            ar = AccessRecord.__table__.c
            rows = (
                session.connection()
                .execute(
                    select(*(ar[c] for c in (*CONTENT_COLUMNS, "proof")))
                    .where(ar.seq.is_(None), ar.id > after)
                    .order_by(ar.id)
                    .limit(batch)
                )
                .all()
            )
            if not rows:
                break
            after = rows[-1].id
            seq, previous = chain.head_seq, chain.head_mac
            updates = []
            for row in rows:
                if row.id in skip:
                    continue
                values = row._asdict()
                if proof_problem(keys, values) is not None and not (legacy and values["proof"] is None):
                    unproven.append(row.id)
                    continue
                legacy = legacy and values["proof"] is None
                seq += 1
                previous = event_seal(key, previous, seq, values)
                updates.append({"rid": row.id, "seq": seq, "key_id": key_id, "mac": previous})
            if updates:
                table = AccessRecord.__table__
                session.connection().execute(
                    update(table)  # type: ignore[arg-type]
                    .where(table.c.id == bindparam("rid"))
                    .values(seq=bindparam("seq"), key_id=bindparam("key_id"), mac=bindparam("mac")),
                    updates,
                )
                session.execute(update(AuditChain).where(AuditChain.id == 1).values(head_seq=seq, head_mac=previous))
            sealed += len(updates)
        if len(rows) < batch:
            break
    if unproven:  # ids only: `passerelle audit verify` names each
        log.error("audit_events_unproven", count=len(unproven), first_ids=unproven[:10])
        if known_unproven is not None:
            known_unproven.update(unproven[: max(0, KNOWN_UNPROVEN_MAX - len(known_unproven))])
    return Sealed(sealed, len(unproven))


def anchor(engine: Engine, settings: Settings) -> dict[str, Any]:
    """Seal what is pending, then the chain's head: the number and seal of its last event."""
    seal(engine, settings)
    with Session(engine) as session:
        chain = session.get(AuditChain, 1)
        head = (chain.head_seq, chain.head_mac) if chain else (0, "")
    return {"seq": head[0], "mac": head[1], "at": utcnow().isoformat(timespec="seconds")}


def parse_anchor(value: str) -> tuple[int, str]:
    """`SEQ:MAC` as `audit anchor` prints it (its JSON is accepted too)."""
    text_value = value.strip()
    if text_value.startswith("{"):
        try:
            data = json.loads(text_value)
            return int(data["seq"]), str(data["mac"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError("the anchor's JSON needs seq and mac") from exc
    seq_text, sep, mac = text_value.partition(":")
    if not sep or not seq_text.isdigit() or len(mac) != 64:
        raise ValueError("an anchor is SEQ:MAC (64 hex digits), as `passerelle audit anchor` prints it")
    return int(seq_text), mac.lower()


@dataclass
class Verification:
    checked: int = 0
    unsealed: int = 0
    unproven: int = 0  # events the service did not write (no valid proof), sealed or not
    head_seq: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems

    def add(self, kind: str, message: str, **where: Any) -> None:
        if len(self.problems) < 1000:
            self.problems.append({"kind": kind, "message": message, **where})

    def as_dict(self) -> dict[str, Any]:
        return {"intact": self.intact, "checked": self.checked, "unsealed": self.unsealed,
                "unproven": self.unproven, "head_seq": self.head_seq, "problems": self.problems}  # fmt: skip

    def add_unproven(self, row: dict[str, Any], problem: str) -> None:
        self.unproven += 1
        where = (
            f"event #{row['seq']} (id {row['id']})"
            if row.get("seq") is not None
            else f"event id {row['id']} (unsealed)"
        )
        self.add("unproven", f"{where} {problem}: the service did not write it (inserted or forged outside it)",
                 id=row["id"], seq=row.get("seq"))  # fmt: skip


def _walk(engine: Engine, after: int, chunk: int = 5000) -> Iterator[dict[str, Any]]:
    """The sealed events in chain order, a chunk per query (a chain of millions in flat memory)."""
    columns = [getattr(AccessRecord, c) for c in (*CONTENT_COLUMNS, "seq", "key_id", "mac", "proof")]
    last = after
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(*columns).where(AccessRecord.seq > last).order_by(AccessRecord.seq).limit(chunk)
            ).all()
        if not rows:
            return
        for row in rows:
            yield row._asdict()
        last = rows[-1].seq


def _unsealed(engine: Engine, chunk: int = 5000) -> Iterator[dict[str, Any]]:
    columns = [getattr(AccessRecord, c) for c in (*CONTENT_COLUMNS, "seq", "proof")]
    last = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(*columns)
                .where(AccessRecord.seq.is_(None), AccessRecord.id > last)
                .order_by(AccessRecord.id)
                .limit(chunk)
            ).all()
        if not rows:
            return
        yield from (row._asdict() for row in rows)
        last = rows[-1].id


def _check_base(engine: Engine, keys: dict[str, bytes], base_seq: int, base_mac: str, result: Verification) -> None:
    """A base past #0 is where a purge moved it: the purge's own event (sealed after it, or still waiting
    for the sealer) names it, with proof, and says the events it removed were past the retention."""
    columns = [getattr(AccessRecord, c) for c in (*CONTENT_COLUMNS, "seq", "proof")]
    with engine.connect() as conn:
        events = conn.execute(
            select(*columns).where(
                AccessRecord.action == AUDIT_PURGE, or_(AccessRecord.seq > base_seq, AccessRecord.seq.is_(None))
            )
        ).all()
        first_kept = conn.execute(select(AccessRecord.proof).where(AccessRecord.seq == base_seq + 1)).first()
    for event in (e._asdict() for e in events):
        try:
            detail = json.loads(event["detail"] or "{}")
            moved_to = int(detail["base_seq"])
        except (ValueError, KeyError, TypeError):
            continue
        if moved_to != base_seq or proof_problem(keys, event) is not None:
            continue  # an unproven one is named on its own
        try:
            youngest = datetime.fromisoformat(detail["youngest_at"])
            retention = int(detail["retention_days"])
        except (ValueError, KeyError, TypeError):
            youngest, retention = event["at"], 0
        if detail.get("base_mac") != base_mac:
            result.add("base", f"the chain's base #{base_seq} is not the one its purge event (id {event['id']}) "
                       "recorded", id=event["id"])  # fmt: skip
        elif retention < AUDIT_RETENTION_MIN_DAYS or youngest >= event["at"] - timedelta(days=retention):
            result.add("base", f"the purge of event id {event['id']} moved the chain's base to #{base_seq} past "
                       "events younger than the retention", id=event["id"])  # fmt: skip
        return
    if first_kept is not None and first_kept.proof is None:
        return  # moved by a purge from before events carried proofs (migration 0021): nothing names it
    result.add("base", f"the chain's base moved to #{base_seq} without the purge event that moved it: the "
               "events before it were deleted")  # fmt: skip


def verify(engine: Engine, settings: Settings, anchor_given: tuple[int, str] | None = None) -> Verification:
    """Recompute the chain from its base; name every event that breaks it, every event the service did not
    write (no valid proof, sealed or not) and a base no purge moved. Never writes."""
    keys = dict(settings.audit_key_ring)
    result = Verification()
    with Session(engine) as session:
        chain = session.get(AuditChain, 1)
        base_seq, base_mac = (chain.base_seq, chain.base_mac) if chain else (0, "")
        head_seq, head_mac = (chain.head_seq, chain.head_mac) if chain else (0, "")
        legacy = _legacy_head(session, chain, keys) if chain else False
        count = select(func.count()).select_from(AccessRecord)
        result.unsealed = session.scalar(count.where(AccessRecord.seq.is_(None))) or 0
        below_base = session.scalar(count.where(AccessRecord.seq <= base_seq)) or 0
        replayed = session.execute(
            select(AccessRecord.proof, func.count()).where(AccessRecord.proof.is_not(None))
            .group_by(AccessRecord.proof).having(func.count() > 1)
        ).all()  # fmt: skip
    if below_base:
        result.add("inserted", f"{below_base} event(s) numbered at or below the chain's base #{base_seq}")
    for _proof, copies in replayed:  # the unique index refuses them: it was set aside
        result.add("replayed", f"{copies} events carry the same proof: all but one are copies of it")
    if base_seq > 0:
        _check_base(engine, keys, base_seq, base_mac, result)
    for row in _unsealed(engine):
        problem = proof_problem(keys, row)
        if problem is not None and not (legacy and row["proof"] is None):
            result.add_unproven(row, problem)
    expected_seq, previous, anchor_seen, proven_seen = base_seq + 1, base_mac, False, False
    for row in _walk(engine, base_seq):
        seq = row["seq"]
        if row["proof"] is not None or proven_seen:
            problem = proof_problem(keys, row)
            if problem is not None:
                result.add_unproven(row, problem)
            proven_seen = True
        if seq != expected_seq:
            result.add("deleted", f"events #{expected_seq} to #{seq - 1} are missing", first=expected_seq, last=seq - 1)
        key = keys.get(row["key_id"] or "")
        if key is None:
            result.add("unknown_key", f"event #{seq} (id {row['id']}) is sealed with an unknown key id "
                       f"{row['key_id']!r}", seq=seq, id=row["id"])  # fmt: skip
        elif not hmac.compare_digest(event_seal(key, previous, seq, row), row["mac"] or ""):
            result.add("modified", f"event #{seq} (id {row['id']}) does not match its seal: modified, inserted "
                       "or moved", seq=seq, id=row["id"])  # fmt: skip
        if anchor_given and seq == anchor_given[0]:
            anchor_seen = True
            if not hmac.compare_digest(row["mac"] or "", anchor_given[1]):
                result.add("anchor", f"event #{seq} is not the one anchored: the chain was rewritten", seq=seq)
        previous, expected_seq = row["mac"] or "", seq + 1
        result.checked += 1
    last_seq = expected_seq - 1
    result.head_seq = last_seq
    if last_seq < head_seq:
        result.add("deleted", f"events #{last_seq + 1} to #{head_seq} (the latest) are missing",
                   first=last_seq + 1, last=head_seq)  # fmt: skip
    elif last_seq > head_seq or (last_seq == head_seq and last_seq > base_seq and previous != head_mac):
        result.add("modified", f"the chain's head (#{head_seq}) does not match its last event (#{last_seq})")
    if anchor_given and not anchor_seen:
        if anchor_given[0] > last_seq:
            result.add("anchor", f"the anchored event #{anchor_given[0]} is missing: the chain ends at #{last_seq}")
        elif anchor_given[0] <= base_seq:
            result.add("anchor", f"the anchored event #{anchor_given[0]} was purged (the chain starts after "
                       f"#{base_seq}): take a newer anchor")  # fmt: skip
    return result


class Sealer:
    """The server's sealer: a thread that seals new events every `interval` seconds, and once more when the
    server stops. Several workers may each run one: the chain's lock keeps them in line."""

    def __init__(self, engine: Engine, settings: Settings, interval: float) -> None:

        self.engine, self.settings, self.interval = engine, settings, interval
        self.known_unproven: set[int] = set()  # logged once, not checked again every few seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-sealer", daemon=True)

    def start(self) -> None:
        if self.interval > 0:
            self._thread.start()

    def _once(self) -> None:
        try:
            seal(self.engine, self.settings, known_unproven=self.known_unproven)
        except Exception as exc:  # the next round tries again; verify counts what stays unsealed
            log.error("audit_seal_failed", error_type=type(exc).__name__)

    def _run(self) -> None:
        while not pause(self._stop, self.interval):
            self._once()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(timeout=30)
            self._once()
