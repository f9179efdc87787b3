"""The audit trail's seal (issue #14): events sealed in one gapless chain by concurrent sealers while
concurrent writers add events; `passerelle audit verify` names every event modified, deleted, inserted or
moved, and a chain cut at its end once given an anchor; on PostgreSQL the application's role can insert
events but neither modify nor delete them. On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from app.audit.chain import anchor, record_action, seal, verify
from app.db import get_engine, session_scope
from app.models import AccessRecord, AuditChain
from tests.support.cli import run_cli


def _events(db, n: int, who: str = "job:test", departement: str = "055") -> None:
    with session_scope(db) as s:
        for i in range(n):
            record_action(s, who, "flux.ingest", departement, detail={"file_id": i}, person_id=i + 1)


def _tamper(db, sql: str, **params) -> None:
    """What someone with the database's superuser can do: the guard trigger set aside on PostgreSQL."""
    with get_engine(db).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text(sql), params)


def _seq_of(db, rank: int) -> tuple[int, int]:
    with session_scope(db) as s:
        row = s.execute(select(AccessRecord.id, AccessRecord.seq).order_by(AccessRecord.seq).offset(rank)).first()
    return row.id, row.seq


def _verify(db, monkeypatch, *args):
    result = run_cli(db, monkeypatch, "audit", "verify", *args)
    return result.exit_code, result.output


def test_an_intact_chain_verifies_and_each_kind_of_tampering_is_named(db, monkeypatch):
    _events(db, 30)
    assert seal(get_engine(db), db) == 30
    assert seal(get_engine(db), db) == 0  # nothing left to seal
    code, out = _verify(db, monkeypatch)
    assert code == 0 and "intact: 30 event(s) checked up to #30" in out, out
    head = run_cli(db, monkeypatch, "audit", "anchor").output.strip()
    assert head.startswith("30:") and len(head) == 3 + 64

    # a row changed (here who did it)
    rid, seq = _seq_of(db, 4)
    _tamper(db, "UPDATE access_records SET principal_id = 'someone-else' WHERE id = :id", id=rid)
    code, out = _verify(db, monkeypatch)
    assert code == 1 and f"modified: event #{seq} (id {rid})" in out and out.count("modified:") == 1, out
    _tamper(db, "UPDATE access_records SET principal_id = 'job:test' WHERE id = :id", id=rid)
    assert _verify(db, monkeypatch)[0] == 0  # put back as it was: intact again

    # a row deleted
    rid, seq = _seq_of(db, 10)
    _tamper(db, "DELETE FROM access_records WHERE id = :id", id=rid)
    code, out = _verify(db, monkeypatch)
    assert code == 1 and f"deleted: events #{seq} to #{seq}" in out, out
    assert f"event #{seq + 1}" in out  # its successor no longer chains to what is before it

    # a row inserted with a number of its own
    _tamper(
        db,
        "INSERT INTO access_records (at, principal_id, departement_code, action, endpoint, found, seq, key_id, mac) "
        "VALUES (:at, 'forger', '055', 'flux.ingest', 'x', :t, 1000, 'dev1', :mac)",
        at="2026-01-01 00:00:00",
        t=True,
        mac="0" * 64,
    )
    code, out = _verify(db, monkeypatch)
    assert code == 1 and "event #1000" in out, out


def test_reordered_and_cut_chains_are_named_and_an_anchor_catches_a_rewritten_end(db, monkeypatch):
    _events(db, 12)
    seal(get_engine(db), db)
    given = anchor(get_engine(db), db)
    a_id, a_seq = _seq_of(db, 3)
    b_id, b_seq = _seq_of(db, 6)
    # two events swap places in the chain
    _tamper(db, "UPDATE access_records SET seq = -1 WHERE id = :id", id=a_id)
    _tamper(db, "UPDATE access_records SET seq = :s WHERE id = :id", s=a_seq, id=b_id)
    _tamper(db, "UPDATE access_records SET seq = :s WHERE id = :id", s=b_seq, id=a_id)
    code, out = _verify(db, monkeypatch, "--no-seal")
    assert code == 1 and f"event #{a_seq} (id {b_id})" in out and f"event #{b_seq} (id {a_id})" in out, out
    _tamper(db, "UPDATE access_records SET seq = -1 WHERE id = :id", id=a_id)
    _tamper(db, "UPDATE access_records SET seq = :s WHERE id = :id", s=b_seq, id=b_id)
    _tamper(db, "UPDATE access_records SET seq = :s WHERE id = :id", s=a_seq, id=a_id)
    assert _verify(db, monkeypatch, "--no-seal")[0] == 0

    # the latest events deleted: the chain's head says so
    _tamper(db, "DELETE FROM access_records WHERE seq > 10")
    code, out = _verify(db, monkeypatch, "--no-seal")
    assert code == 1 and "events #11 to #12 (the latest) are missing" in out, out
    # ... and once the head is rewritten too, only the anchor kept outside the database tells
    with session_scope(db) as s:
        mac10 = s.scalar(select(AccessRecord.mac).where(AccessRecord.seq == 10))
    _tamper(db, "UPDATE audit_chain SET head_seq = 10, head_mac = :m", m=mac10)
    assert _verify(db, monkeypatch, "--no-seal")[0] == 0
    code, out = _verify(db, monkeypatch, "--no-seal", "--anchor", f"{given['seq']}:{given['mac']}")
    assert code == 1 and "the anchored event #12 is missing" in out, out
    code, out = _verify(db, monkeypatch, "--anchor", "12:nope")
    assert code == 2 and "SEQ:MAC" in out


def test_concurrent_writers_and_sealers_keep_one_gapless_chain(db):
    engine = get_engine(db)
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(n: int) -> None:
        try:
            for _ in range(25):
                _events(db, 4, who=f"writer-{n}")
        except BaseException as exc:
            errors.append(exc)

    def sealer() -> None:
        try:
            while not stop.is_set():
                seal(engine, db, batch=7)
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    sealers = [threading.Thread(target=sealer) for _ in range(3)]
    for t in writers + sealers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in sealers:
        t.join()
    assert not errors, errors
    seal(engine, db)
    with session_scope(db) as s:
        seqs = list(s.scalars(select(AccessRecord.seq).order_by(AccessRecord.seq)))
        chain = s.get(AuditChain, 1)
    assert seqs == list(range(1, 401)) and chain.head_seq == 400
    result = verify(engine, db)
    assert result.intact and result.checked == 400, result.problems


def test_the_application_role_can_add_events_but_not_change_or_delete_them(db):
    if not db.database_url.startswith("postgresql"):
        pytest.skip("roles and triggers are PostgreSQL's; SQLite's journal is a file the service owns")
    _events(db, 3)
    seal(get_engine(db), db)
    role = f"passerelle_app_{uuid.uuid4().hex[:8]}"
    admin = create_engine(db.database_url)
    with admin.begin() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar()
        conn.execute(text(f'CREATE ROLE "{role}" NOLOGIN'))
        conn.execute(text(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"'))
        conn.execute(
            text(f'GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"')
        )
        conn.execute(text(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA "{schema}" TO "{role}"'))
    try:
        for statement in (
            "UPDATE access_records SET principal_id = 'x'",
            "DELETE FROM access_records",
            "TRUNCATE access_records",
            "UPDATE access_records SET seq = seq + 100",
        ):
            with admin.connect() as conn, conn.begin():
                conn.execute(text(f'SET LOCAL ROLE "{role}"'))
                with pytest.raises(Exception, match="cannot be") as refused:
                    conn.execute(text(statement))
                assert refused.value.orig.sqlstate == "42501"  # insufficient_privilege
        # the service connected as that role writes its events and seals them
        url = make_url(db.database_url)
        options = f"{url.query.get('options', '')} -crole={role}".strip()
        as_app = create_engine(url.update_query_dict({"options": options}))
        try:
            _events(db.model_copy(update={"database_url": as_app.url.render_as_string(hide_password=False)}), 2)
            assert seal(as_app, db) == 2
        finally:
            as_app.dispose()
        assert verify(get_engine(db), db).checked == 5
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'REVOKE ALL ON ALL TABLES IN SCHEMA "{schema}" FROM "{role}"'))
            conn.execute(text(f'REVOKE ALL ON ALL SEQUENCES IN SCHEMA "{schema}" FROM "{role}"'))
            conn.execute(text(f'REVOKE ALL ON SCHEMA "{schema}" FROM "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))
        admin.dispose()


def test_actions_are_audit_events_without_personal_data(db, client, make_api_key, tmp_path, monkeypatch):
    """Ingest (accepted and rejected), an API client created, webhook deliveries (refused and processed), an
    orientation import from the CLI: each is an event naming who, what, the outcome and counts, never a NIR
    or a name; all sealed into one intact chain."""
    from fastapi.testclient import TestClient

    from tests.support.fluxbuilder import NIR_A, foyer, person, write_flux
    from tests.support.helpers import upload_flux
    from tests.support.rdv_insertion import SECRET, signed

    key = make_api_key(["flux:write"], name="caf-depot")
    good = write_flux(tmp_path, [foyer(person(NIR_A, nom="DUPONT"))])
    assert upload_flux(client, key, good).status_code == 201
    bad = tmp_path / "bad.xml"
    bad.write_bytes(good.read_bytes().replace(b"</", b"<", 3))
    assert upload_flux(client, key, bad).status_code == 422
    from pydantic import SecretStr

    from app.main import create_app

    hooked = create_app(db.model_copy(update={"rdv_insertion_secrets": SecretStr('{"055": "' + SECRET + '"}')}))
    with TestClient(hooked) as c:
        body, headers = signed({"data": {}, "meta": {"model": "Rdv", "event": "created"}})
        assert c.post("/api/v1/webhooks/rdv-insertion/055", content=body,
                      headers=headers | {"X-Rdvi-Signature": "00"}).status_code == 401  # fmt: skip
        malformed = c.post("/api/v1/webhooks/rdv-insertion/055", content=body, headers=headers)  # no meta.timestamp
        assert (malformed.status_code, malformed.json()["error"]) == (422, "malformed"), malformed.text
    csv_file = tmp_path / "events.csv"
    csv_file.write_text("nir;date_naissance;evenement;date\n2850799123456;1985-07-01;orientation;2024-01-02\n")
    run_cli(db, monkeypatch, "orientations", "import", csv_file, "--departement", "055")
    seal(get_engine(db), db)
    with session_scope(db) as s:
        events = s.scalars(select(AccessRecord).where(AccessRecord.person_id.is_(None)).order_by(AccessRecord.id)).all()
    seen = {(e.action, e.outcome, e.principal_id) for e in events}
    client_id = str(client.get("/api/v1/me", headers={"X-API-Key": key}).json()["id"])
    assert ("client.create", "ok", "job:clients") in seen
    assert ("flux.ingest", "ok", client_id) in seen and ("flux.ingest", "rejected", client_id) in seen, seen
    assert ("webhook.delivery", "refused", "webhook:rdv-insertion") in seen, seen
    assert any(a == "webhook.delivery" and o in ("ok", "rejected") for a, o, _ in seen), seen
    assert ("orientation.import", "rejected", "job:orientations import") in seen, seen  # nobody known
    ingest_event = next(e for e in events if e.action == "flux.ingest" and e.outcome == "ok")
    assert '"status": "applied"' in ingest_event.detail and ingest_event.request_id
    everything = " ".join(f"{e.detail} {e.endpoint} {e.principal_id}" for e in events)
    assert NIR_A not in everything and "DUPONT" not in everything
    assert verify(get_engine(db), db).intact
