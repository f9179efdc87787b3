"""`passerelle purge` (issue #14, retention): exactly what is past its retention goes, everything else stays
as it was; `--dry-run` counts the same and changes nothing; the audit chain still verifies after its oldest
events went; the purge is itself an audit event. On SQLite and PostgreSQL."""

from __future__ import annotations

import os
import time
from datetime import date, timedelta

from sqlalchemy import func, select

from app.admin.purge import PERSON_TABLES, purge
from app.audit.chain import action_row, seal, verify
from app.audit.proof import insert_events
from app.clock import today
from app.db import get_engine, session_scope
from app.models import AccessRecord, AuditChain, FtCall, FtIdentity, FtSnapshot, Person, WebhookDelivery
from app.models.base import Base, utcnow
from app.orientation.service import EventIn, record_event
from app.security.nir import NirProtector
from tests.support.cli import run_cli
from tests.support.factories import ingest, ingest_generated
from tests.support.fluxbuilder import NIR_A, NIR_B, NIR_C, foyer, person, write_flux

LONG_AGO = date(2022, 3, 1)
CALL = {"attempts": 1, "duration_ms": 5, "outcome": "ok", "source": "sync"}


def _rows_of(db, person_ids) -> dict[str, int]:
    counts = {}
    with get_engine(db).connect() as conn:
        for model in (*PERSON_TABLES, Person):
            table = model.__table__
            column = table.c.person_id if "person_id" in table.c else table.c.id
            counts[table.name] = conn.execute(
                select(func.count()).select_from(table).where(column.in_(person_ids))
            ).scalar()
    return counts


def _everything_but(db, skip: set[str]) -> dict[str, list]:
    out = {}
    with get_engine(db).connect() as conn:
        for table in Base.metadata.sorted_tables:
            if table.name not in skip:
                out[table.name] = sorted(map(tuple, conn.execute(select(table)).all()), key=repr)
    return out


def _scene(db, tmp_path) -> dict[str, int]:
    """A: right closed in 2022 (purged); B: right open since 2022 (kept); C: closed 40 days ago (kept). The
    audit trail starts with two events of 400 days ago (purged)."""
    with session_scope(db) as s:
        old = action_row("client:9", "person.read", "055", person_id=None)
        old["at"] = utcnow() - timedelta(days=400)
        insert_events(s, [old, {**old, "action": "person.search"}])
    closed = foyer(person(NIR_A, nom="ANCIEN"), matricule="0000001", etat="6")
    still_open = foyer(person(NIR_B, nom="OUVERT", prenom="MARIE", sexe="2"), matricule="0000002")
    old_file = write_flux(tmp_path, [closed, still_open], day=LONG_AGO)
    assert ingest(db, old_file, received_on=LONG_AGO).status == "applied"
    recent = today(db) - timedelta(days=40)
    recent_dir = tmp_path / "recent"
    recent_dir.mkdir()
    recent_file = write_flux(
        recent_dir, [foyer(person(NIR_C, nom="RECENT"), matricule="0000003", etat="6")], day=recent
    )
    assert ingest(db, recent_file, received_on=recent).status == "applied"
    protector = NirProtector(db.encryption_keys, db.hmac_key)
    with session_scope(db, write=True) as s:
        ids = {p.nom: p.id for p in s.scalars(select(Person))}
        for name in ("ANCIEN", "OUVERT"):
            p = s.get(Person, ids[name])
            event = EventIn(type="invitation", date=p.first_received_on, external_id=f"inv-{p.id}")
            record_event(s, db, p, event, recorded_by="test")
            live = utcnow() + timedelta(hours=1)
            s.add(FtIdentity(person_id=p.id, departement_code="055", code="S001", outcome="found", certified=True,
                             jeton_encrypted=protector.encrypt("x"), jeton_expires_at=live, source="sync"))  # fmt: skip
            s.add(FtSnapshot(person_id=p.id, departement_code="055", kind="statut", data={"codeStatut": "2"},
                             fingerprint="f"))  # fmt: skip
            s.add(
                FtCall(person_id=p.id, departement_code="055", api="statut", operation="lire", http_status=200, **CALL)
            )
        # a jeton past its expiry, of the person who stays
        s.add(FtIdentity(person_id=ids["OUVERT"], departement_code="055", code="S001", outcome="found",
                         certified=True, jeton_encrypted=protector.encrypt("y"),
                         jeton_expires_at=utcnow() - timedelta(minutes=1),
                         source="sync"))  # fmt: skip
    with session_scope(db) as s:  # who read A now: the trail stays (our ids only)
        insert_events(s, [action_row("client:9", "person.read", "055", person_id=ids["ANCIEN"])])
    seal(get_engine(db), db)
    return ids


def test_purge_removes_exactly_what_is_past_retention(db, tmp_path, monkeypatch):
    ids = _scene(db, tmp_path)
    quarantine = db.data_dir / "quarantine"
    quarantine.mkdir(parents=True, exist_ok=True)
    stale, fresh = quarantine / "stale.xml", quarantine / "fresh.xml"
    stale.write_text("<x/>")
    fresh.write_text("<x/>")
    now = time.time()  # the files' times by this process's clock (the file system dates them by the machine's)
    long_ago = now - (db.quarantine_retention_days + 1) * 86400
    os.utime(stale, (long_ago, long_ago))
    os.utime(fresh, (now, now))
    a, kept = [ids["ANCIEN"]], [ids["OUVERT"], ids["RECENT"]]
    before_a, before_kept = _rows_of(db, a), _rows_of(db, kept)
    assert before_a["persons"] == 1 and before_a["person_states"] and before_a["orientation_events"]
    untouched = {"access_records", "audit_chain", "ft_identities", "job_leases", *before_a}

    before = _everything_but(db, untouched)
    dry = run_cli(db, monkeypatch, "purge", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert _everything_but(db, untouched) == before and _rows_of(db, a) == before_a and stale.exists()
    assert '"persons": 1' in dry.output and '"audit_events": 2' in dry.output, dry.output

    report = purge(get_engine(db), db)
    assert report.counts["persons"] == 1 and report.counts["quarantine_files"] == 1
    assert report.counts["ft_jetons_expired"] == 1 and report.counts["audit_events"] == 2
    assert all(n == 0 for n in _rows_of(db, a).values()), _rows_of(db, a)  # A: nothing left anywhere
    assert _rows_of(db, kept) == before_kept  # B and C: as they were
    assert not stale.exists() and fresh.exists()
    with session_scope(db) as s:
        jetons = dict(s.execute(select(FtIdentity.jeton_expires_at > utcnow(), FtIdentity.jeton_encrypted)).all())
        assert set(jetons) == {True, False}
        assert jetons[False] is None and jetons[True]  # the live jeton stays, the expired one is gone
        assert s.scalar(select(func.count()).select_from(AccessRecord).where(AccessRecord.person_id == a[0])) == 1
        chain = s.get(AuditChain, 1)
        assert chain.base_seq == 2 and chain.base_mac
        purge_events = s.scalars(
            select(AccessRecord.detail).where(AccessRecord.action.in_(("purge", "purge.dry_run")))
        ).all()
        steps = s.scalars(select(AccessRecord.detail).where(AccessRecord.action == "purge.step")).all()
    assert len(purge_events) == 2 and '"persons": 1' in purge_events[-1]
    assert any('"persons": 1' in step for step in steps) and any('"quarantine_files": 1' in step for step in steps)
    assert "ANCIEN" not in " ".join(purge_events) and NIR_A not in " ".join(purge_events)
    result = verify(get_engine(db), db)
    assert result.intact, result.problems
    again = purge(get_engine(db), db)  # nothing more to do
    assert again.counts["persons"] == 0 and again.counts["audit_events"] == 0


def test_old_webhook_bodies_and_france_travail_traces_go(db, tmp_path):
    ids = _scene(db, tmp_path)
    with session_scope(db, write=True) as s:
        for days in (200, 10):
            s.add(WebhookDelivery(source="rdv-insertion", departement_code="055", body_encrypted="secret-body",
                                  body_sha256=str(days), signature_valid=True, status="processed",
                                  received_at=utcnow() - timedelta(days=days)))  # fmt: skip
        s.add(FtCall(person_id=ids["OUVERT"], departement_code="055", api="statut", operation="lire",
                     http_status=200, **CALL, at=utcnow() - timedelta(days=db.ft_call_retention_days + 1)))  # fmt: skip
    report = purge(get_engine(db), db)
    assert report.counts["webhook_bodies"] == 1 and report.counts["ft_calls_old"] == 1
    with session_scope(db) as s:
        bodies = sorted(s.scalars(select(WebhookDelivery.body_encrypted)))
        assert bodies == ["", "secret-body"]
        assert s.scalar(select(func.count()).select_from(FtCall).where(FtCall.person_id == ids["OUVERT"])) == 1


def test_events_kept_aside_go_once_resolved_past_the_retention_and_never_before(db, tmp_path):
    """An event kept aside during a file (queued_events, its body and agent) and its outcome are raw input, like
    a webhook body: once resolved for longer than PASSERELLE_WEBHOOK_BODY_RETENTION_DAYS they go. A queued one
    (not applied yet), a recent one, and an outcome whose event is still there are kept."""
    from app.models import QueuedEvent, QueuedEventOutcome

    ids = _scene(db, tmp_path)
    pid, old = ids["OUVERT"], utcnow() - timedelta(days=db.webhook_body_retention_days + 1)
    caller = {"agent": ["a1", "DUPONT", "JEAN"], "kind": "client", "name": "c", "scopes": [], "departements": []}
    with session_scope(db, write=True) as s:
        for n, status, resolved in ((1, "done", old), (2, "done", utcnow()), (3, "queued", None), (4, "done", old)):
            s.add(QueuedEvent(id=n, departement_code="055", person_id=pid, principal_id="client:1",
                              idempotency_key=f"k{n}", request={"event": {"type": "invitation"}, "caller": caller},
                              status=status, received_at=old))  # fmt: skip
            if resolved is not None:
                s.add(QueuedEventOutcome(queued_id=n, departement_code="055", person_id=pid, status="applied",
                                         status_code=201, resolved_at=resolved))  # fmt: skip
    dry = purge(get_engine(db), db, dry_run=True)
    assert dry.counts["queued_events"] == 2 and dry.counts["queued_event_outcomes"] == 2
    report = purge(get_engine(db), db)
    assert report.counts["queued_events"] == 2 and report.counts["queued_event_outcomes"] == 2
    with session_scope(db) as s:
        assert sorted(s.scalars(select(QueuedEvent.id))) == [2, 3]
        assert sorted(s.scalars(select(QueuedEventOutcome.queued_id))) == [2]
    assert purge(get_engine(db), db).counts["queued_events"] == 0


def test_purge_and_key_rotation_while_a_flux_is_ingested_and_persons_are_read(db, tmp_path, client, make_api_key):
    """The purge and a key rotation run beside an ingestion and readers: no 'database is locked', no error,
    each does all its work (on SQLite the writers take turns)."""
    import threading

    from app.admin.keys import rotate_nir
    from app.flux.generator import generate

    ids = _scene(db, tmp_path)
    out = tmp_path / "big"
    generate(out, 400, 2, today(db) - timedelta(days=5), seed=5, departement="054")  # its own stock
    key = make_api_key(["persons:read"])
    errors: list[BaseException] = []
    reads: list[int] = []
    stop = threading.Event()

    def ingest_all() -> None:
        try:
            ingest_generated(db, out, departement="054")
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:
        while not stop.is_set():
            reads.append(client.get(f"/api/v1/persons/{ids['OUVERT']}", headers={"X-API-Key": key}).status_code)

    results: dict[str, object] = {}

    def maintain() -> None:
        try:
            results["purge"] = purge(get_engine(db), db)
            results["rotate"] = rotate_nir(get_engine(db), db)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=f) for f in (ingest_all, maintain, read)]
    for t in threads:
        t.start()
    for t in threads[:2]:
        t.join()
    stop.set()
    threads[2].join()
    assert not errors, errors
    assert results["purge"].counts["persons"] == 1  # type: ignore[attr-defined]
    assert reads and set(reads) == {200}, set(reads)
    assert _rows_of(db, [ids["ANCIEN"]])["persons"] == 0
    with session_scope(db) as s:
        assert s.scalar(select(func.count()).select_from(Person)) > 400
