"""Signed checkpoints for an auditor without our keys (issue #23, item 7): the Merkle tree against RFC 6962's
test vectors, the signed note against Go's sumdb/note vector; `passerelle audit verify --checkpoint FILE
--public-key FILE` names an event altered, deleted, inserted or reordered before the checkpoint, a base moved
without a purge and the journal deleted, proves an event's inclusion, and still verifies after a real purge;
checkpoints published to a directory and by e-mail. On SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import email
import json
from datetime import timedelta
from email import policy

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr
from sqlalchemy import insert, select, text

from app.admin.purge import purge
from app.audit.chain import action_row, record_action, seal
from app.audit.checkpoint import (
    CheckpointError,
    CheckpointPublisher,
    SignatureError,
    event_leaf,
    key_id,
    open_note,
    open_signed,
    parse_public_key,
    publish,
    sign_text,
)
from app.audit.merkle import inclusion_proof, leaf_hash, root_of, verify_inclusion
from app.audit.proof import insert_events
from app.db import get_engine, session_scope
from app.models import AccessRecord, AuditChain
from app.models.base import utcnow
from app.settings import ConfigurationError, Settings
from tests.support.cli import run_cli

# RFC 6962's reference data (certificate-transparency's merkle_tree_test): leaves and the roots of their
# first 1..8 leaves.
LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
ORIGIN = "passerelle-rsa.departement.test/audit"


def test_the_tree_is_rfc_6962s_and_its_inclusion_proofs_verify():
    leaves = [leaf_hash(bytes.fromhex(d)) for d in LEAVES]
    for n in range(1, 9):
        root = root_of(leaves[:n])
        assert root.hex() == ROOTS[n - 1]
        for m in range(n):
            proof = inclusion_proof(m, leaves[:n])
            assert verify_inclusion(m, n, leaves[m], proof, root)
            assert not verify_inclusion(m, n, leaf_hash(b"other"), proof, root)
            assert not verify_inclusion(m, n, leaves[m], [*proof, root], root)
            if n > 1:
                assert not verify_inclusion((m + 1) % n, n, leaves[m], proof, root)
    # a proof in the RFC's shape: leaf 2 of 7 (f, cd, abij... as in RFC 9162's example tree)
    assert len(inclusion_proof(2, leaves[:7])) == 3


def test_the_signed_note_is_the_one_go_sumdb_note_writes_and_reads():
    vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    skey = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"  # PRIVATE+KEY+PeterNeumann+c74f20a3+<this>
    note_text = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
    note = note_text + ("\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvq"
                        "fqdngotpRZb6KE6RyyBwJnAM=\n")  # fmt: skip
    name, public = parse_public_key(vkey)
    assert name == "PeterNeumann" and key_id(name, public).hex() == "c74f20a3"
    assert open_signed(note, public, name) == note_text
    private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(skey)[1:])
    assert sign_text(note_text, "PeterNeumann", private) == note
    with pytest.raises(SignatureError):
        open_signed(note.replace("problem,", "problem;"), public, name)
    with pytest.raises(SignatureError):  # another key's signature only: ignored, so none verifies
        open_signed(note, Ed25519PrivateKey.generate().public_key().public_bytes_raw(), name)


# -- against the database -----------------------------------------------------------------------------------


def _events(db, n: int, start: int = 0) -> None:
    with session_scope(db) as s:
        for i in range(start, start + n):
            record_action(s, "job:test", "flux.ingest", "055", detail={"file_id": i}, person_id=i + 1)


def _tamper(db, *statements: str, **params) -> None:
    """What someone with the database's superuser can do: the guard triggers set aside on PostgreSQL."""
    with get_engine(db).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        for sql in statements:
            conn.execute(text(sql), params)


def _row(db, seq: int):
    with get_engine(db).connect() as conn:
        return conn.execute(select(AccessRecord).where(AccessRecord.seq == seq)).first()


@pytest.fixture
def signer(monkeypatch):
    key = Ed25519PrivateKey.generate()
    monkeypatch.setenv("PASSERELLE_AUDIT_SIGNING_KEY", base64.urlsafe_b64encode(key.private_bytes_raw()).decode())
    monkeypatch.setenv("PASSERELLE_AUDIT_CHECKPOINT_ORIGIN", ORIGIN)
    return key


def _signed(db, monkeypatch, tmp_path, name: str = "checkpoint.txt") -> tuple:
    """A checkpoint of the chain as it is now, and the public key, as the auditor keeps them."""
    result = run_cli(db, monkeypatch, "audit", "checkpoint")
    assert result.exit_code == 0, result.output
    note = tmp_path / name
    note.write_text(result.output)
    key = tmp_path / "audit.pub"
    key.write_text(run_cli(db, monkeypatch, "audit", "public-key").output)
    return note, key


def _auditor(db, monkeypatch, note, key, *more):
    result = run_cli(db, monkeypatch, "audit", "verify", "--checkpoint", note, "--public-key", key, *more)
    return result.exit_code, result.output


def test_a_checkpoint_verifies_with_the_public_key_only_and_proves_an_event(db, monkeypatch, tmp_path, signer):
    _events(db, 20)
    note, key = _signed(db, monkeypatch, tmp_path)
    assert note.read_text().startswith(f"{ORIGIN}\n20\n") and f"\n\n\u2014 {ORIGIN} " in note.read_text()
    _events(db, 5, start=20)  # events after the checkpoint do not matter to it
    seal(get_engine(db), db)
    monkeypatch.setenv("PASSERELLE_AUDIT_KEYS", "")  # the auditor has none of our keys
    code, out = _auditor(db, monkeypatch, note, key)
    assert code == 0 and f"matches the checkpoint of 20 event(s) signed by {ORIGIN}" in out, out

    rid = _row(db, 7).id
    code, out = _auditor(db, monkeypatch, note, key, "--event", rid)
    assert code == 0 and f"event {rid} is #7, leaf 6" in out and f"event {rid} IS in the checkpoint" in out, out
    assert out.count("\n  ") == 5  # log2(20) rounded up: five hashes
    code, out = _auditor(db, monkeypatch, note, key, "--event", _row(db, 22).id, "--json")
    assert code == 1 and "after the checkpoint's 20: take a newer checkpoint" in out, out

    code, out = _auditor(db, monkeypatch, note, key, "--json")
    assert code == 0 and json.loads(out)["checkpoint_size"] == 20


def _alter(db):
    _tamper(db, "UPDATE access_records SET principal_id = 'someone-else' WHERE seq = 5")


def _delete(db):
    _tamper(db, "DELETE FROM access_records WHERE seq = 5")


def _insert(db):
    """A forged event #5, the later ones renumbered, the head moved: a chain without a gap."""
    row = action_row("forger", "flux.ingest", "055", detail={"file_id": 99})
    _tamper(
        db,
        "UPDATE access_records SET seq = seq + 1000 WHERE seq >= 5",
        "UPDATE access_records SET seq = seq - 999 WHERE seq >= 1005",
        "UPDATE audit_chain SET head_seq = head_seq + 1",
    )
    with get_engine(db).begin() as conn:
        conn.execute(insert(AccessRecord).values(**row, seq=5, key_id="dev1", mac="0" * 64))


def _reorder(db):
    _tamper(
        db,
        "UPDATE access_records SET seq = 1003 WHERE seq = 3",
        "UPDATE access_records SET seq = 3 WHERE seq = 8",
        "UPDATE access_records SET seq = 8 WHERE seq = 1003",
    )


def _move_base(db):
    """The first five events deleted and the base moved past them with their leaf hashes kept (anyone can
    compute them): the root still matches, but no purge did it."""
    rows = [_row(db, seq) for seq in range(1, 6)]
    _tamper(db, "DELETE FROM access_records WHERE seq <= 5", "UPDATE audit_chain SET base_seq = 5, base_mac = :mac",
            mac=rows[-1].mac)  # fmt: skip
    with get_engine(db).begin() as conn:
        for r in rows:
            leaf = event_leaf(r.seq, r._asdict()).hex()
            conn.execute(text("INSERT INTO audit_leaves (seq, leaf) VALUES (:s, :l)"), {"s": r.seq, "l": leaf})


def _drop_journal(db):
    _tamper(db, "DELETE FROM access_records", "DELETE FROM audit_chain")


def _cut_journal(db):
    _tamper(db, "DELETE FROM access_records WHERE seq > 15", "UPDATE audit_chain SET head_seq = 15")


@pytest.mark.parametrize(
    ("tampering", "said"),
    [
        (_alter, "modified: the first 20 event(s) do not hash to the checkpoint's root"),
        (_delete, "deleted: events #5 to #5 are missing"),
        (_insert, "modified: the first 20 event(s) do not hash to the checkpoint's root"),
        (_reorder, "modified: the first 20 event(s) do not hash to the checkpoint's root"),
        (_move_base, "base: the chain starts after #5 but no purge recorded one: the base was moved without a purge"),
        (_drop_journal, "deleted: the chain's state is gone: the journal was deleted or emptied"),
        (_cut_journal, "deleted: the chain ends at #15 but the checkpoint counts 20 event(s)"),
    ],
)
def test_the_auditor_detects_each_tampering_before_the_checkpoint(db, monkeypatch, tmp_path, signer, tampering, said):
    _events(db, 20)
    note, key = _signed(db, monkeypatch, tmp_path)
    code, out = _auditor(db, monkeypatch, note, key)
    assert code == 0, out
    tampering(db)
    code, out = _auditor(db, monkeypatch, note, key)
    assert code == 1 and said in out and "does NOT match" in out, out


def test_a_checkpoint_not_signed_by_the_key_is_refused_exit_6(db, monkeypatch, tmp_path, signer):
    _events(db, 3)
    note, key = _signed(db, monkeypatch, tmp_path)
    forged = tmp_path / "forged.txt"
    forged.write_text(note.read_text().replace(f"{ORIGIN}\n3\n", f"{ORIGIN}\n2\n"))
    code, out = _auditor(db, monkeypatch, forged, key)
    assert code == 6 and "NOT TRUSTED" in out and "does not verify" in out, out
    other = tmp_path / "other.pub"
    other.write_text(run_cli(db, monkeypatch, "audit", "keygen", "--public-key", tmp_path / "k.pub").output and
                     (tmp_path / "k.pub").read_text())  # fmt: skip
    code, out = _auditor(db, monkeypatch, note, other)
    assert code == 6 and "no signature of the key given" in out, out
    broken = tmp_path / "broken.txt"
    broken.write_text("not a checkpoint\n")
    assert _auditor(db, monkeypatch, broken, key)[0] == 2
    assert run_cli(db, monkeypatch, "audit", "verify", "--checkpoint", note).exit_code == 2
    with pytest.raises(CheckpointError):
        parse_public_key("nothing here")
    name, public = parse_public_key(key.read_text())
    assert name == ORIGIN and open_note(note.read_text(), public, name).size == 3


def test_a_purge_keeps_the_checkpoints_verifiable_and_records_the_base(db, monkeypatch, tmp_path, signer):
    with session_scope(db, write=True) as session:
        old = [action_row("job:test", "flux.ingest", "055", person_id=i) for i in range(6)]
        for row in old:
            row["at"] = utcnow() - timedelta(days=400)
        insert_events(session, old)  # written as the service writes them (with their proof, item 6)
    _events(db, 4)
    note, key = _signed(db, monkeypatch, tmp_path)
    report = purge(get_engine(db), db)
    assert report.counts["audit_events"] == 6 and report.audit_base == 6
    code, out = _auditor(db, monkeypatch, note, key)
    assert code == 0 and "starts after #6" in out, out
    newer, _ = _signed(db, monkeypatch, tmp_path, "newer.txt")
    assert "\n12\n" in newer.read_text()  # the purge's two events (audit.purge, purge) sealed after the 10
    assert _auditor(db, monkeypatch, newer, key)[0] == 0
    code, out = _auditor(db, monkeypatch, note, key, "--event", _row(db, 9).id)
    assert code == 0 and "IS in the checkpoint" in out, out
    code, out = _auditor(db, monkeypatch, note, key, "--event", 1)  # purged: its content is gone
    assert code == 1 and "no event 1 in the journal" in out, out
    with get_engine(db).connect() as conn:
        assert conn.scalar(select(AuditChain.base_seq)) == 6


def test_checkpoints_are_published_to_a_directory_and_by_mail(xsettings, smtp, tmp_path, monkeypatch):
    sink, port = smtp
    key = Ed25519PrivateKey.generate()
    folder = tmp_path / "auditor"
    settings = xsettings.model_copy(update={
        "audit_signing_key": SecretStr(base64.urlsafe_b64encode(key.private_bytes_raw()).decode()),
        "audit_checkpoint_dir": folder, "audit_checkpoint_email": ["auditeur@cnil.test"],
        "audit_checkpoint_origin": ORIGIN,
    })  # fmt: skip
    engine = get_engine(settings)
    _events(settings, 4)
    seal(engine, settings)
    publisher = CheckpointPublisher(engine, settings, 3600)
    publisher.once()
    publisher.once()  # nothing new: nothing published again
    CheckpointPublisher(engine, settings, 3600).once()  # another worker: this size is published already
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint-4.txt", "latest"]
    assert len(sink.messages) == 1
    msg = email.message_from_bytes(sink.messages[0], policy=policy.default)
    assert msg["To"] == "auditeur@cnil.test" and "4 événements" in msg["Subject"]
    attached = next(msg.iter_attachments())
    assert attached.get_filename() == "checkpoint-4.txt"
    note = attached.get_content()
    assert open_note(note, key.public_key().public_bytes_raw()).size == 4
    assert (folder / "latest").read_text() == note

    _events(settings, 2, start=4)
    seal(engine, settings)
    publisher.once()
    assert (folder / "checkpoint-6.txt").exists() and len(sink.messages) == 2

    # `audit anchor` publishes one too
    monkeypatch.setenv("PASSERELLE_AUDIT_SIGNING_KEY", settings.audit_signing_key.get_secret_value())
    monkeypatch.setenv("PASSERELLE_AUDIT_CHECKPOINT_DIR", str(folder))
    monkeypatch.setenv("PASSERELLE_AUDIT_CHECKPOINT_ORIGIN", ORIGIN)
    _events(settings, 1, start=6)
    result = run_cli(settings, monkeypatch, "audit", "anchor")
    assert result.exit_code == 0 and "\n7:" in "\n" + result.output, result.output
    assert (folder / "checkpoint-7.txt").exists() and "7\n" in (folder / "latest").read_text()
    _checkpoint, again = publish(engine, settings)
    assert again == (folder / "checkpoint-7.txt").read_text()  # the same size, the same note (Ed25519)

    # the mail server refuses: the anchor is printed all the same, the command says what was not sent (exit 3)
    sink.refuse = True
    for name, value in (("SMTP_HOST", "127.0.0.1"), ("SMTP_PORT", str(port)), ("SMTP_TLS", "none"),
                        ("AUDIT_CHECKPOINT_EMAIL", "auditeur@cnil.test")):  # fmt: skip
        monkeypatch.setenv(f"PASSERELLE_{name}", value)
    result = run_cli(settings, monkeypatch, "audit", "anchor")
    assert result.exit_code == 3 and "7:" in result.output and "was not published" in result.output, result.output


def test_prod_refuses_a_weak_or_missing_signing_key(tmp_path):
    def k() -> str:
        return base64.urlsafe_b64encode(Ed25519PrivateKey.generate().private_bytes_raw()).decode()

    strong = {"nir_encryption_keys": f"k1:{k()}", "nir_hmac_key": k(), "api_key_pepper": k(), "audit_keys": f"a1:{k()}"}
    Settings(
        env="prod", data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/p.db", **strong
    )  # no destination: no key needed
    with pytest.raises(ConfigurationError, match="PASSERELLE_AUDIT_SIGNING_KEY is required"):
        Settings(
            env="prod",
            data_dir=tmp_path,
            database_url=f"sqlite:///{tmp_path}/p.db",
            audit_checkpoint_dir=tmp_path,
            **strong,
        )
    for weak in ("changeme", base64.urlsafe_b64encode(bytes(32)).decode(), "c2hvcnQ"):
        with pytest.raises(ConfigurationError, match="PASSERELLE_AUDIT_SIGNING_KEY"):
            Settings(
                env="prod",
                data_dir=tmp_path,
                database_url=f"sqlite:///{tmp_path}/p.db",
                audit_signing_key=weak,
                **strong,
            )
    pem = Ed25519PrivateKey.generate()
    from cryptography.hazmat.primitives import serialization

    text_pem = pem.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode()  # fmt: skip
    ok = Settings(
        env="prod",
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path}/p.db",
        audit_signing_key=text_pem,
        audit_checkpoint_dir=tmp_path,
        **strong,
    )
    assert ok.audit_signing_seed == pem.private_bytes_raw()


def test_the_server_publishes_checkpoints_at_its_interval(db, tmp_path):
    import time

    from fastapi.testclient import TestClient

    from app.main import create_app

    folder = tmp_path / "auditor"
    settings = db.model_copy(update={"audit_checkpoint_dir": folder, "audit_checkpoint_interval_seconds": 0.2,
                                     "audit_seal_interval_seconds": 0.1})  # fmt: skip
    _events(settings, 3)
    with TestClient(create_app(settings)):
        deadline = time.monotonic() + 20
        while not (folder / "checkpoint-3.txt").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    assert (folder / "checkpoint-3.txt").exists(), "no checkpoint published by the server"
    assert int((folder / "latest").read_text().split("\n")[1]) >= 3


def test_the_kept_leaf_hashes_cannot_be_changed_or_deleted_on_postgresql(db):
    if not db.database_url.startswith("postgresql"):
        pytest.skip("triggers are PostgreSQL's; SQLite's journal is a file the service owns")
    with get_engine(db).begin() as conn:
        conn.execute(text("INSERT INTO audit_leaves (seq, leaf) VALUES (1, :l)"), {"l": "ab" * 32})
    for statement in ("UPDATE audit_leaves SET leaf = 'x'", "DELETE FROM audit_leaves", "TRUNCATE audit_leaves"):
        with get_engine(db).begin() as conn, pytest.raises(Exception, match="are kept") as refused:
            conn.execute(text(statement))
        assert refused.value.orig.sqlstate == "42501"  # insufficient_privilege


def test_several_workers_mail_each_checkpoint_once(xsettings, smtp):
    """Review of issue #23: with an e-mail destination only, each server worker mailed each checkpoint."""
    sink, _port = smtp
    key = Ed25519PrivateKey.generate()
    settings = xsettings.model_copy(update={
        "audit_signing_key": SecretStr(base64.urlsafe_b64encode(key.private_bytes_raw()).decode()),
        "audit_checkpoint_email": ["auditeur@cnil.test"], "audit_checkpoint_origin": ORIGIN,
    })  # fmt: skip
    engine = get_engine(settings)
    _events(settings, 3)
    seal(engine, settings)
    workers = [CheckpointPublisher(engine, settings, 3600) for _ in range(3)]
    for worker in workers:
        worker.once()
    assert len(sink.messages) == 1
    _events(settings, 2)
    seal(engine, settings)
    for worker in reversed(workers):
        worker.once()
    assert len(sink.messages) == 2


def test_a_database_that_fails_during_the_check_is_exit_3_not_a_deleted_journal(db, monkeypatch, tmp_path, signer):
    """Review finding 11: a lost connection says the database failed (exit 3), never "deleted or damaged"."""
    from sqlalchemy.exc import OperationalError

    from app.audit import checkpoint as module

    _events(db, 4)
    note, key = _signed(db, monkeypatch, tmp_path)

    def lost(*_args, **_kwargs):
        raise OperationalError("SELECT ...", None, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(module, "journal_tree", lost)
    code, out = _auditor(db, monkeypatch, note, key)
    assert code == 3 and "the database failed" in out and "deleted" not in out, out
