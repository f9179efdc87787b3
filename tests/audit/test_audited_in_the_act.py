"""An action's audit event is written in the transaction that does the action, never after its commit
(issue #24 item 1: a kill right after a commit left an applied flux file with no `flux.ingest` event, and a
killed purge's or key rotation's committed deletions and rewrites unaudited). Each test stops the job right
after a commit, as a kill -9 would, and finds the event. On SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import secrets

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from app.admin import purge as purge_module
from app.admin.keys import rotate_nir
from app.clock import today
from app.db import get_engine, session_scope
from app.flux import loader
from app.flux.loader import IngestOptions, ingest_file
from app.models import AccessRecord, FluxFile
from tests.admin.test_purge import _scene
from tests.support.fluxbuilder import NIR_A, NIR_B, foyer, person, write_flux


class Killed(BaseException):
    """The process ends here (a kill -9 runs no handler: nothing after this point runs)."""


def _die(*_args, **_kwargs):
    raise Killed


def _events(db, action: str) -> list[dict]:
    with session_scope(db) as s:
        return [
            json.loads(d or "{}") for d in s.scalars(select(AccessRecord.detail).where(AccessRecord.action == action))
        ]


@pytest.mark.parametrize("kind", ["applied", "rejected"])
def test_a_flux_file_killed_right_after_its_commit_has_its_event(db, tmp_path, monkeypatch, kind):
    path = write_flux(tmp_path, [foyer(person(NIR_A))])
    if kind == "rejected":
        path.write_bytes(path.read_bytes()[:300])  # cut: rejected, recorded as such
    monkeypatch.setattr(loader, "log", type("DyingLog", (), {"info": _die, "warning": _die, "error": _die})())
    with pytest.raises(Killed):
        ingest_file(get_engine(db), db, path, IngestOptions(received_on=today(db)))
    with session_scope(db) as s:
        (file_id, status) = s.execute(select(FluxFile.id, FluxFile.status)).one()
    assert status == kind
    (event,) = _events(db, "flux.ingest")
    assert event["file_id"] == file_id and event["status"] == kind


def test_a_purge_killed_midway_has_its_deletions_audited(db, tmp_path, monkeypatch):
    _scene(db, tmp_path)
    monkeypatch.setattr(purge_module, "purge_france_travail", _die)  # killed after the persons' step
    with pytest.raises(Killed):
        purge_module.purge(get_engine(db), db)
    steps = _events(db, "purge.step")
    assert steps and sum(step.get("persons", 0) for step in steps) == 1, steps
    assert _events(db, "purge") == []  # the summary never came: the steps are the record


def test_a_key_rotation_killed_midway_has_its_batches_audited(db, tmp_path, monkeypatch):
    old = db.nir_encryption_keys.get_secret_value()
    path = write_flux(tmp_path, [foyer(person(NIR_A)), foyer(person(NIR_B, prenom="MARIE"), matricule="0009999")])
    assert ingest_file(get_engine(db), db, path, IngestOptions(received_on=today(db))).status == "applied"
    new = f"k2:{base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()}"
    rotated = db.model_copy(update={"nir_encryption_keys": SecretStr(f"{new},{old}")})
    with pytest.raises(Killed):
        rotate_nir(get_engine(db), rotated, progress=_die)  # killed after the first batch's commit
    (step,) = _events(db, "keys.rotate.nir.step")
    assert step == {"persons": 2}
