"""A hostile review of the merge of issues #23 and #24: each test failed on main at 07a79d5 and is fixed since
(checkpoints after a pre-0022 purge, a resend after a killed run, a killed week retried, refusals per
département, a purged unreadable delivery replayed, a forged purge event refused by the keyless check)."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select, text

import app.audit.chain as chain_mod
from app.audit.chain import action_row, seal, verify
from app.db import get_engine, session_scope
from app.models import AccessRecord
from app.models.base import utcnow
from tests.support.cli import run_cli


@pytest.fixture
def signer(monkeypatch):
    key = Ed25519PrivateKey.generate()
    monkeypatch.setenv("PASSERELLE_AUDIT_SIGNING_KEY", base64.urlsafe_b64encode(key.private_bytes_raw()).decode())
    monkeypatch.setenv("PASSERELLE_AUDIT_CHECKPOINT_ORIGIN", "passerelle-rsa.departement.test/audit")
    return key


def test_checkpoint_can_be_signed_after_an_upgrade_whose_base_was_moved_by_a_pre_0022_purge(db, monkeypatch, signer):
    """A deployment upgraded to 0022 whose audit chain was already purged (base #3, by the purge of before
    this change: no audit_leaves, no audit.purge event) must still be able to sign checkpoints. On main,
    `journal_tree` demands leaf hashes #1..#3 that never existed: `audit checkpoint` exits 1 forever and the
    server's CheckpointPublisher logs audit_checkpoint_failed at every interval."""
    engine = get_engine(db)
    with engine.begin() as conn:  # events written before migration 0021: no proof
        rows = [action_row("job:old", "flux.ingest", "055", person_id=i) for i in range(6)]
        for row in rows:
            row["at"] = utcnow() - timedelta(days=400)
        conn.execute(AccessRecord.__table__.insert(), rows)
    with monkeypatch.context() as m:  # sealed by the code of before 0021 (no proof check)
        m.setattr(chain_mod, "proof_problem", lambda *_a: None)
        assert seal(engine, db) == 6
    with engine.connect() as conn:
        mac3 = conn.scalar(select(AccessRecord.mac).where(AccessRecord.seq == 3))
    with engine.begin() as conn:  # the purge of before 0021/0022 (app/admin/purge.py at 3005ddd)
        if conn.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text("DELETE FROM access_records WHERE seq <= 3"))
        conn.execute(text("UPDATE audit_chain SET base_seq = 3, base_mac = :m"), {"m": mac3})
    with engine.begin() as conn:  # what migration 0022 does at the upgrade: those 3 get placeholder leaves
        conn.execute(text("UPDATE audit_chain SET leaves_from = base_seq"))
    assert verify(engine, db).intact, verify(engine, db).problems  # the chain itself accepts the legacy base
    result = run_cli(db, monkeypatch, "audit", "checkpoint")
    assert result.exit_code == 0, result.output


class Killed(BaseException):
    """kill -9 right after the mail server took the message."""


def test_a_resend_after_a_killed_run_leaves_no_stale_mail_to_be_sent_again(xsettings, smtp, tmp_path, monkeypatch):
    """Run 1 is killed after the SMTP server took the e-mail (ExportMail `sending`, links live). The operator
    runs `export weekly --resend` (publish(resend=True)): `_interrupted_mail` is skipped, a second e-mail with
    new links goes out, and mail 1 stays `sending` with its links live. The next default run of that week then
    finds mail 1 `sending` and mails it a THIRD time (old links), instead of doing nothing."""
    from app.exports import publish as pub
    from app.models import ExportLink, ExportMail
    from tests.support.factories import weekly_departement

    sink, _port = smtp
    week = weekly_departement(xsettings, tmp_path, foyers=20)
    real = pub.send

    def accepted_then_killed(settings, msg):
        real(settings, msg)
        raise Killed

    monkeypatch.setattr(pub, "send", accepted_then_killed)
    with pytest.raises(Killed):
        pub.publish(get_engine(xsettings), xsettings, "055", week)
    monkeypatch.setattr(pub, "send", real)
    assert pub.publish(get_engine(xsettings), xsettings, "055", week, resend=True).mailed
    assert len(sink.messages) == 2
    again = pub.publish(get_engine(xsettings), xsettings, "055", week)  # the nightly job: nothing to send
    with session_scope(xsettings) as s:
        statuses = sorted(s.scalars(select(ExportMail.status)))
        live = s.scalar(select(func.count()).select_from(ExportLink).where(ExportLink.revoked_at.is_(None)))
    assert not again.mailed and len(sink.messages) == 2, (statuses, len(sink.messages))
    assert "sending" not in statuses and live == 2, (statuses, live)


def test_a_week_whose_run_was_killed_before_the_mail_left_is_retried_by_the_default_run(
    xsettings, tmp_path, monkeypatch
):
    """A run killed after `_prepare_mail` committed (status `sending`) but before the SMTP server took the
    message: nobody received anything. `weeks_to_retry` only returns `failed` weeks, so once the default run
    targets the next week (the weekly cron), this week is never mailed, its files never published, its links
    left live: docs/exports.md and `export weekly --help` promise a retry until sent or cancelled."""
    from app.exports import publish as pub
    from tests.support.factories import weekly_departement

    week = weekly_departement(xsettings, tmp_path, foyers=20)

    def killed(_settings, _msg):
        raise Killed

    monkeypatch.setattr(pub, "send", killed)
    with pytest.raises(Killed):
        pub.publish(get_engine(xsettings), xsettings, "055", week)
    assert pub.weeks_to_retry(get_engine(xsettings), "055") == [week.label]


def test_an_auditor_of_one_departement_does_not_read_other_departements_refusals_through_star(db, make_api_key):
    """`GET /api/v1/audit/accesses?departement=*` is open to any audit:read caller, whatever its départements
    (app/api/audit.py:69). The refusals of a client serving several départements are recorded under `*`
    (app/api/refusals.py caller_departement), with its principal id, agent and source address: an auditor of
    054 alone reads the refused attempts of a 055+974 platform (and every anonymous source address)."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    platform = make_api_key(["persons:read"], ["055", "974"], name="plateforme-055-974")
    auditor_54 = {"X-API-Key": make_api_key(["audit:read"], ["054"], name="dpo-54")}
    with TestClient(create_app(db), raise_server_exceptions=False) as c:
        assert c.get("/api/v1/audit/accesses", headers={"X-API-Key": platform}).status_code == 403
    with TestClient(create_app(db), raise_server_exceptions=False) as c:
        r = c.get("/api/v1/audit/accesses", params={"departement": "*", "outcome": "refused"}, headers=auditor_54)
    seen = [i for i in r.json().get("items", []) if i["principal_id"] != "anonymous"] if r.status_code == 200 else []
    assert seen == [], seen


def test_replay_unreadable_survives_a_malformed_delivery_whose_body_was_purged(db, monkeypatch, tmp_path):
    """`webhooks replay --unreadable` takes the malformed deliveries "whenever received"; the purge empties the
    body of every delivery past PASSERELLE_WEBHOOK_BODY_RETENTION_DAYS (PURGED_BODY = "", malformed ones too).
    Replay then decrypts "" -> KeyError("no NIR key with id ''"): the whole replay crashes (exit 4), so once one
    old unreadable delivery was purged, no unreadable delivery can ever be replayed."""
    from sqlalchemy import update

    from app.admin.purge import PURGED_BODY
    from app.clock import today
    from app.flux.loader import IngestOptions, ingest_file
    from app.integrations.rdv_insertion import webhooks as rdvi
    from app.models import WebhookDelivery
    from tests.support.fluxbuilder import NIR_A, foyer, person, write_flux

    flux = write_flux(tmp_path, [foyer(person(NIR_A))])
    assert ingest_file(get_engine(db), db, flux, IngestOptions(received_on=today(db))).status == "applied"
    with session_scope(db, write=True) as s:
        status, _answer = rdvi.process(s, db, "055", b'{"meta": 1}')
        assert status == 422
    with session_scope(db, write=True) as s:
        s.execute(update(WebhookDelivery).values(body_encrypted=PURGED_BODY))  # what purge_webhook_bodies does
    result = run_cli(db, monkeypatch, "webhooks", "replay", "--unreadable", "--json")
    assert result.exit_code == 0, (result.exit_code, result.output[-300:])


def test_the_public_key_verification_is_not_fooled_by_an_unsealed_forged_purge_event(db, monkeypatch, tmp_path, signer):
    """With INSERT/DELETE on the journal (the service role: the PG guard lets it delete sealed events older than
    180 days, whatever PASSERELLE_AUDIT_RETENTION_DAYS says) one deletes old events, keeps their leaf hashes
    (anyone computes them), moves the base and INSERTs an `audit.purge` row naming it, without proof and never
    sealed. `_recorded_base` (app/audit/checkpoint.py) accepts any row with that action, sealed or not, proven
    or not, and checks no retention: `audit verify --checkpoint` says intact."""

    from app.audit.checkpoint import event_leaf
    from app.audit.proof import insert_events

    engine = get_engine(db)
    with session_scope(db, write=True) as session:
        old = [action_row("job:test", "persons.read", "055", person_id=i + 1) for i in range(8)]
        # past the PG guard's 180 days by the server's clock (its now()), within a 365-day retention by ours:
        # the earlier of the two clocks, which a run dated by faketime (README) sets apart
        server_now = session.execute(text("SELECT CURRENT_TIMESTAMP")).scalar_one() if not db.is_sqlite else utcnow()
        for row in old:
            row["at"] = min(utcnow(), server_now) - timedelta(days=200)
        insert_events(session, old)
    assert seal(engine, db) == 8
    signed = run_cli(db, monkeypatch, "audit", "checkpoint")
    assert signed.exit_code == 0, signed.output
    note = tmp_path / "cp.txt"
    note.write_text(signed.output)
    key = tmp_path / "audit.pub"
    key.write_text(run_cli(db, monkeypatch, "audit", "public-key").output)

    with engine.connect() as conn:
        rows = conn.execute(select(AccessRecord).where(AccessRecord.seq <= 5).order_by(AccessRecord.seq)).all()
    with engine.begin() as conn:  # no superuser needed: what the service role may do
        for r in rows:
            conn.execute(
                text("INSERT INTO audit_leaves (seq, leaf) VALUES (:s, :l)"),
                {"s": r.seq, "l": event_leaf(r.seq, r._asdict()).hex()},
            )
        conn.execute(text("DELETE FROM access_records WHERE seq <= 5"))
        conn.execute(text("UPDATE audit_chain SET base_seq = 5, base_mac = :m"), {"m": rows[-1].mac})
        conn.execute(
            AccessRecord.__table__.insert(), [action_row("job:purge", "audit.purge", None, detail={"base_seq": 5})]
        )
    result = run_cli(db, monkeypatch, "audit", "verify", "--checkpoint", note, "--public-key", key)
    assert result.exit_code == 1 and "base" in result.output, result.output
