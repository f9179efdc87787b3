"""`passerelle keys` (issue #14): after a rotation every person is still found by NIR and every stored value
decrypts with the new key alone; every published export is still served; a missing old key stops the
rotation with its name and changes nothing; rotations are audited. On SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import secrets

from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select

from app.db import get_engine, session_scope
from app.exports import publish as pub
from app.main import create_app
from app.models import AccessRecord, Export, FtIdentity, PendingEvent, Person, WebhookDelivery
from app.models.base import utcnow
from app.orientation.service import import_csv
from app.security.nir import NirProtector
from tests.support.cli import run_cli
from tests.support.factories import ingest, weekly_departement
from tests.support.fluxbuilder import NIR_A, NIR_B, NIR_C, foyer, person, write_flux
from tests.support.smtp import links


def _key(key_id: str) -> str:
    return f"{key_id}:{base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()}"


def _with_nir_keys(db, keys: str):
    return db.model_copy(update={"nir_encryption_keys": SecretStr(keys)})


def test_a_nir_key_rotation_keeps_everyone_findable_and_everything_readable(db, tmp_path, monkeypatch, make_api_key):
    old = db.nir_encryption_keys.get_secret_value()
    path = write_flux(tmp_path, [foyer(person(NIR_A)), foyer(person(NIR_B, prenom="MARIE"), matricule="0009999")])
    assert ingest(db, path).status == "applied"
    protector = NirProtector(db.encryption_keys, db.hmac_key)
    with session_scope(db, write=True) as s:
        pid = s.scalar(select(Person.id).order_by(Person.id))
        jeton, body = protector.encrypt("jeton-123"), protector.encrypt('{"a":1}')
        s.add(FtIdentity(person_id=pid, departement_code="055", code="S001", outcome="found", certified=True,
                         jeton_encrypted=jeton, jeton_expires_at=utcnow(), source="sync"))  # fmt: skip
        s.add(WebhookDelivery(source="rdv-insertion", departement_code="055", body_encrypted=body,
                              body_sha256="x", signature_valid=True, status="processed"))  # fmt: skip
        # an event kept aside for a person no flux brought (its reference and content encrypted)
        kept = import_csv(s, db, "055", f"nir;evenement;date\n{NIR_C};invitation;2024-03-01\n", recorded_by="t")
        assert kept.pending == 1

    # a key that is not the one in use: refused, with the table named, nothing changed
    wrong = _with_nir_keys(db, _key("k9"))
    refused = run_cli(wrong, monkeypatch, "keys", "rotate", "nir")
    assert refused.exit_code == 3 and "persons" in refused.output and "'k1'" in refused.output, refused.output

    rotated = _with_nir_keys(db, f"{_key('k2')},{old}")
    before = json.loads(run_cli(rotated, monkeypatch, "keys", "status", "--json").output)
    assert before["nir"] == {"active": "k2", "values_by_key": {"k1": 5}}
    done = run_cli(rotated, monkeypatch, "keys", "rotate", "nir", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["rewritten"] == {
        "persons": 2, "ft_identities": 1, "webhook_deliveries": 1, "pending_events": 1, "export_mails": 0}  # fmt: skip
    assert json.loads(run_cli(rotated, monkeypatch, "keys", "rotate", "nir", "--json").output)["rewritten"] == {
        "persons": 0, "ft_identities": 0, "webhook_deliveries": 0, "pending_events": 0, "export_mails": 0}  # fmt: skip
    after = json.loads(run_cli(rotated, monkeypatch, "keys", "status", "--json").output)
    assert after["nir"]["values_by_key"] == {"k2": 5}

    only_new = _with_nir_keys(db, rotated.nir_encryption_keys.get_secret_value().split(",")[0])
    new_protector = NirProtector(only_new.encryption_keys, only_new.hmac_key)
    with session_scope(only_new) as s:
        nirs = sorted(new_protector.decrypt(v) for v in s.scalars(select(Person.nir_encrypted)))
        assert nirs == sorted([NIR_A, NIR_B])
        assert new_protector.decrypt(s.scalar(select(FtIdentity.jeton_encrypted))) == "jeton-123"
        assert new_protector.decrypt(s.scalar(select(WebhookDelivery.body_encrypted))) == '{"a":1}'
        assert NIR_C in new_protector.decrypt(s.scalar(select(PendingEvent.payload_encrypted)))
    key = make_api_key(["persons:read"])
    with TestClient(create_app(only_new)) as c:
        for nir in (NIR_A, NIR_B):
            found = c.post("/api/v1/persons/search", headers={"X-API-Key": key},
                           json={"nir": nir, "date_naissance": "1990-01-15"})  # fmt: skip
            assert found.status_code == 200 and len(found.json()["items"]) == 1, found.text
    with session_scope(db) as s:
        actions = list(s.scalars(select(AccessRecord.outcome).where(AccessRecord.action == "keys.rotate.nir")))
    assert sorted(actions) == ["error", "ok", "ok"]


def test_an_export_key_rotation_keeps_every_link_serving(xsettings, smtp, tmp_path, monkeypatch):
    sink, _port = smtp
    old = _key("e1")
    first = xsettings.model_copy(update={"export_keys": SecretStr(old)})
    week = weekly_departement(first, tmp_path, foyers=30)
    assert pub.publish(get_engine(first), first, "055", week).mailed
    tokens = links(sink.messages[0])
    with TestClient(create_app(first)) as c:
        served = {kind: c.get(f"/api/v1/exports/download/{t}").content for kind, t in tokens.items()}
    new = _key("e2")
    monkeypatch.setenv("PASSERELLE_EXPORT_KEYS", f"{new},{old}")
    done = run_cli(first, monkeypatch, "keys", "rotate", "export", "--json")
    assert done.exit_code == 0 and json.loads(done.output)["rewritten"] == {"exports": 2}, done.output
    new_only = first.model_copy(
        update={"export_keys": SecretStr(__import__("os").environ["PASSERELLE_EXPORT_KEYS"].split(",")[0])}
    )
    with session_scope(first) as s:
        assert set(s.scalars(select(Export.key_id))) == {"e2"}
    with TestClient(create_app(new_only)) as c:
        for kind, token in tokens.items():
            again = c.get(f"/api/v1/exports/download/{token}")
            assert again.status_code == 200 and again.content == served[kind], again.text
