"""Audit tampering that used to pass as intact (issue #23, item 6): a forged, back-dated event inserted into
the journal is never sealed and `audit verify` names it (each event carries, from the moment it is written,
proof that the service wrote it); a chain's base moved past recent events, or without the purge event that
moved it, is named too, even with --anchor. On SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import re
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from app.audit.chain import AUDIT_PURGE, Sealer, action_row, anchor, event_seal, record_action, seal, verify
from app.audit.proof import insert_events
from app.db import get_engine, session_scope
from app.models import AccessRecord, AuditChain
from app.models.base import utcnow
from tests.support.cli import run_cli

FORGED = (
    "INSERT INTO access_records (at, principal_id, agent_identifiant, departement_code, person_id, action, "
    "endpoint, found, outcome, proof) VALUES (:at, 'client:7', 'agent.dupont', '055', 42, 'person.read', "
    "'GET /api/v1/persons/42', :t, 'ok', :proof)"
)


def _events(db, n: int, action: str = "flux.ingest") -> None:
    with session_scope(db) as s:
        for i in range(n):
            record_action(s, "job:test", action, "055", detail={"file_id": i}, person_id=i + 1)


def _sql(db, sql: str, *, bypass: bool = False, **params) -> None:
    """Straight into the journal, as someone with the database's password (`bypass`: its superuser, the
    guard trigger set aside on PostgreSQL)."""
    with get_engine(db).begin() as conn:
        if bypass and conn.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text(sql), params)


def _verify(db, monkeypatch, *args):
    result = run_cli(db, monkeypatch, "audit", "verify", *args)
    return result.exit_code, result.output


def _forged_id(db) -> int:
    with session_scope(db) as s:
        return s.scalar(select(func.max(AccessRecord.id)).where(AccessRecord.principal_id == "client:7"))


def test_a_forged_back_dated_read_is_never_sealed_and_verify_names_it(db, monkeypatch):
    _events(db, 5)
    seal(get_engine(db), db)
    given = anchor(get_engine(db), db)
    # someone blames an agent for a read of person 42 three weeks ago that never happened
    _sql(db, FORGED, at=utcnow() - timedelta(days=21), t=True, proof=None)
    forged = _forged_id(db)
    code, out = _verify(db, monkeypatch, "--anchor", f"{given['seq']}:{given['mac']}")  # seals first
    assert code == 1, out
    assert f"unproven: event id {forged} (unsealed) carries no proof: the service did not write it" in out, out
    with session_scope(db) as s:
        assert s.scalar(select(AccessRecord.seq).where(AccessRecord.id == forged)) is None  # never sealed

    # it holds nothing up: the service's later events are sealed past it, even one per batch
    _events(db, 3)
    done = seal(get_engine(db), db, batch=1)
    assert (done, done.unproven) == (3, 1)
    sealed = run_cli(db, monkeypatch, "audit", "seal")
    assert sealed.exit_code == 1 and "1 event(s) NOT sealed" in sealed.output, sealed.output
    result = verify(get_engine(db), db)
    assert result.checked == 8 and result.unproven == 1 and [p["kind"] for p in result.problems] == ["unproven"]

    # a proof made up, or taken from a genuine event onto other content, does not verify
    with session_scope(db) as s:
        genuine = s.scalar(select(AccessRecord.proof).where(AccessRecord.seq == 1))
    key_id = db.audit_key_ring[0][0]
    _sql(db, FORGED, at=utcnow(), t=True, proof=f"{key_id}:00:{'0' * 64}")
    made_up = _forged_id(db)
    # a copy of a genuine event (its proof with it) is refused by the database itself
    with pytest.raises(IntegrityError):
        _sql(db, FORGED, at=utcnow(), t=True, proof=genuine)
    problems = {p["id"]: p["message"] for p in verify(get_engine(db), db).problems}
    assert set(problems) == {forged, made_up} and "does not match its proof" in problems[made_up], problems

    # an unsealed genuine event changed before the sealer came: its proof no longer matches
    _events(db, 1)
    with session_scope(db) as s:
        changed = s.scalar(select(func.max(AccessRecord.id)).where(AccessRecord.principal_id == "job:test"))
    _sql(db, "UPDATE access_records SET person_id = 42 WHERE id = :id", bypass=True, id=changed)
    assert seal(get_engine(db), db).unproven == 3
    assert changed in {p["id"] for p in verify(get_engine(db), db).problems}


def test_the_guard_keeps_an_events_proof_as_written(db):
    if not db.database_url.startswith("postgresql"):
        pytest.skip("the guard trigger is PostgreSQL's")
    _events(db, 1)
    with session_scope(db) as s:
        rid = s.scalar(select(AccessRecord.id))
    with pytest.raises(Exception, match="cannot be modified"):  # not even while it is sealed
        _sql(db, "UPDATE access_records SET seq = 1, key_id = 'x', mac = 'x', proof = NULL WHERE id = :id", id=rid)


def test_proofs_outlive_a_key_rotation_while_the_old_key_is_kept(db, monkeypatch):
    _events(db, 2)  # proven under the current first key
    (old_id, old_key), new = db.audit_key_ring[0], base64.urlsafe_b64encode(b"n" * 32).decode()
    encoded = base64.urlsafe_b64encode(old_key).decode()
    rotated = db.model_copy(update={"audit_keys": SecretStr(f"n1:{new},{old_id}:{encoded}")})
    assert seal(get_engine(rotated), rotated) == 2 and verify(get_engine(rotated), rotated).intact
    retired = db.model_copy(update={"audit_keys": SecretStr(f"n1:{new}")})
    problems = verify(get_engine(retired), retired).problems
    assert any(p["kind"] == "unproven" and f"unknown key id {old_id!r}" in p["message"] for p in problems), problems


def _head(db) -> tuple[int, str]:
    with session_scope(db) as s:
        chain = s.get(AuditChain, 1)
        return chain.head_seq, chain.head_mac


def _move_base(db, upto: int) -> None:
    """What a purge does, by hand: the events up to #upto deleted, the chain's base moved past them."""
    with session_scope(db) as s:
        mac = s.scalar(select(AccessRecord.mac).where(AccessRecord.seq == upto))
    _sql(db, "DELETE FROM access_records WHERE seq <= :upto", bypass=True, upto=upto)
    _sql(db, "UPDATE audit_chain SET base_seq = :upto, base_mac = :mac", upto=upto, mac=mac)


def test_a_base_moved_past_recent_events_or_without_its_purge_is_named(db, monkeypatch):
    _events(db, 10)
    seal(get_engine(db), db)
    head = _head(db)
    # today's oldest events deleted, the base moved past them: it looked like a purge, even to --anchor
    _move_base(db, 3)
    code, out = _verify(db, monkeypatch, "--anchor", f"{head[0]}:{head[1]}")
    assert code == 1 and "base: the chain's base moved to #3 without the purge event that moved it" in out, out

    # a purge event of the service's (proven) naming that base, but the events it removed were recent
    with session_scope(db) as s:
        mac3 = s.scalar(select(AuditChain.base_mac))
    young = {"base_seq": 3, "base_mac": mac3, "events": 3, "youngest_at": utcnow().isoformat(), "retention_days": 365}
    with session_scope(db) as s:
        insert_events(s, [action_row("job:purge", AUDIT_PURGE, None, detail=young)])
    code, out = _verify(db, monkeypatch)
    assert code == 1 and "moved the chain's base to #3 past events younger than the retention" in out, out

    # a genuine purge of old events passes; deleting more afterwards and moving the base again does not
    old = {**young, "youngest_at": (utcnow() - timedelta(days=400)).isoformat()}
    _move_base(db, 5)
    with session_scope(db) as s:
        old["base_seq"], old["base_mac"] = 5, s.scalar(select(AuditChain.base_mac))
        insert_events(s, [action_row("job:purge", AUDIT_PURGE, None, detail=old)])
    code, out = _verify(db, monkeypatch)
    assert code == 0, out
    _move_base(db, 7)
    code, out = _verify(db, monkeypatch)
    assert code == 1 and "moved to #7 without the purge event" in out, out


def test_the_purge_names_the_base_it_moves(db, monkeypatch):
    with session_scope(db) as s:
        old = action_row("client:9", "person.read", "055")
        old["at"] = utcnow() - timedelta(days=db.audit_retention_days + 10)
        insert_events(s, [old, {**old, "action": "person.search"}])
    _events(db, 2)
    from app.admin.purge import purge

    assert purge(get_engine(db), db).counts["audit_events"] == 2
    with session_scope(db) as s:
        detail = s.scalar(select(AccessRecord.detail).where(AccessRecord.action == AUDIT_PURGE))
    assert '"base_seq": 2' in detail and '"retention_days": ' in detail
    assert _verify(db, monkeypatch)[0] == 0
    # the purge's event gone with the rest (by hand): the base is no longer accounted for
    _sql(db, "DELETE FROM access_records WHERE action = :a", bypass=True, a=AUDIT_PURGE)
    code, out = _verify(db, monkeypatch, "--no-seal")
    assert code == 1 and "moved to #2 without the purge event" in out, out


def _seal_as_before_proofs(db) -> None:
    """Events written and sealed by the service before migration 0020: no proof."""
    rows = [action_row("job:old", "flux.ingest", "055", person_id=i) for i in range(1, 4)]
    with get_engine(db).begin() as conn:
        conn.execute(AccessRecord.__table__.insert(), rows)  # the insert of before 0020
    key_id, key = db.audit_key_ring[0]
    columns = [*AccessRecord.__table__.c]
    with get_engine(db).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        previous, seq = "", 0
        for row in conn.execute(select(*columns).order_by(AccessRecord.id)).mappings().all():
            seq += 1
            previous = event_seal(key, previous, seq, dict(row))
            conn.execute(text("UPDATE access_records SET seq = :s, key_id = :k, mac = :m WHERE id = :id"),
                         {"s": seq, "k": key_id, "m": previous, "id": row["id"]})  # fmt: skip
        conn.execute(text("UPDATE audit_chain SET head_seq = :s, head_mac = :m"), {"s": seq, "m": previous})


def test_events_from_before_proofs_are_sealed_until_the_first_proven_one_is(db, monkeypatch):
    _sql(db, "INSERT INTO audit_chain (id, head_seq, head_mac, base_seq, base_mac) VALUES (1, 0, '', 0, '')")
    _seal_as_before_proofs(db)
    # written by the service before the upgrade, not sealed yet: no proof, sealed as before
    with get_engine(db).begin() as conn:
        conn.execute(AccessRecord.__table__.insert(), [action_row("job:old", "flux.ingest", "055")])
    _events(db, 2)  # after the upgrade: proven
    assert seal(get_engine(db), db) == 3
    assert verify(get_engine(db), db).intact
    _sql(db, FORGED, at=utcnow(), t=True, proof=None)  # now the door is closed
    assert seal(get_engine(db), db).unproven == 1
    code, out = _verify(db, monkeypatch)
    assert code == 1 and re.search(r"unproven: event id \d+ \(unsealed\) carries no proof", out), out


def test_every_insert_of_audit_events_goes_through_the_proof():
    """A new way of writing events that forgets the proof would see them refused by the sealer: this says so
    before it ships."""
    app_dir = Path(__file__).resolve().parents[2] / "app"
    pattern = re.compile(
        r"insert\(\s*AccessRecord|(?<!class )AccessRecord\(|AccessRecord\)?\.(__table__\.)?insert"
        r"|INSERT\s+(OR\s+\w+\s+)?INTO\s+(audit\.)?access_records",
        re.I,
    )
    offenders = [
        str(path.relative_to(app_dir))
        for path in app_dir.rglob("*.py")
        if path.name != "proof.py" and pattern.search(path.read_text())
    ]
    assert offenders == [], f"audit events written without their proof in {offenders}: use insert_events"


def test_the_servers_sealer_checks_and_logs_an_unproven_event_once(db):
    """Review of issue #23: every few seconds the server's sealer re-read, re-checked and logged each unproven
    row again; it now remembers them (the CLI's `audit seal` still checks everything)."""
    _events(db, 2)
    _sql(db, FORGED, at=utcnow(), t=True, proof=None)
    forged = _forged_id(db)
    sealer = Sealer(get_engine(db), db, interval=0)
    first = seal(get_engine(db), db, known_unproven=sealer.known_unproven)
    assert (first, first.unproven) == (2, 1) and sealer.known_unproven == {forged}
    _events(db, 1)
    again = seal(get_engine(db), db, known_unproven=sealer.known_unproven)
    assert (again, again.unproven) == (1, 0)  # the forged row not checked (nor logged) again
    assert seal(get_engine(db), db).unproven == 1  # but a full seal still names it


def test_a_batchs_proofs_have_nonces_of_their_own_and_verify(db):
    """`proven` draws a batch's nonces at once (issue #27): each event still has its own 16 hex digits."""
    from app.audit.proof import proof_problem, proven

    rows = [action_row("client:1", "worklist.read", "055", person_id=n) for n in range(60)]
    with get_engine(db).connect() as conn:
        events = proven(conn, rows)
    nonces = [e["proof"].split(":")[1] for e in events]
    assert all(re.fullmatch(r"[0-9a-f]{16}", n) for n in nonces) and len(set(nonces)) == 60
    keys = dict(db.audit_key_ring)
    assert all(proof_problem(keys, e) is None for e in events)
