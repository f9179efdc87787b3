"""France Travail for a person (issue #12): the API routes and what they store, over real HTTP to the fake
France Travail started as a separate process, on SQLite and PostgreSQL."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.db import get_engine, session_scope
from app.flux.loader import ingest_file
from app.main import create_app
from app.models import AccessRecord, FtCall, FtIdentity, FtSnapshot
from tests.support.ftsupport import AGENT_HEADERS, fake_stats, faults, ft_settings, population


@pytest.fixture
def ft_app(db, fake):
    faults(fake)
    settings = ft_settings(db, fake)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c, settings


def _h(key, **over):
    return {"X-API-Key": key} | AGENT_HEADERS | over


def _refresh(c, key, pid, **headers):
    return c.post(f"/api/v1/persons/{pid}/france-travail/refresh", headers=_h(key, **headers))


def test_a_generated_person_is_searched_its_statut_and_diagnostic_stored_and_shown(ft_app, db, make_api_key, tmp_path):
    c, _settings = ft_app
    kinds = population(db, tmp_path)
    key = make_api_key(["ft:read"])
    pid = kinds["certified"][0]
    first = _refresh(c, key, pid)
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["resultat"], body["codeRetour"], body["jetonReutilise"]) == ("found", "S001", False)
    assert body["identite"]["identiteCertifiee"] == "Oui" and body["identite"]["jetonValideJusquau"]
    assert {"identite", "statut", "diagnostic"} <= set(body["changements"])
    statut = body["statut"]
    assert statut["aucuneDonnee"] or statut["donnees"]["statutDE"] in ("Inscrit", "Identifié", "Cessé", "Radié")
    assert "jetonUsager" not in first.text and "m_statut" not in first.text  # our vocabulary, no credential
    # again: the stored jeton is reused (no search), nothing changed, no new snapshot
    again = _refresh(c, key, pid).json()
    assert (again["jetonReutilise"], again["changements"]) == (True, {})
    shown = c.get(f"/api/v1/persons/{pid}/france-travail", headers={"X-API-Key": key})
    assert shown.status_code == 200 and shown.json()["statut"] == again["statut"]
    with session_scope(db) as s:
        assert s.scalar(select(func.count()).select_from(FtIdentity)) == 1
        assert s.scalar(select(func.count()).select_from(FtSnapshot)) == 2
        (jeton,) = s.scalars(select(FtIdentity.jeton_encrypted)).all()
        assert jeton and jeton.startswith("k1:")  # encrypted with the key id in front
        calls = s.execute(select(FtCall.api, FtCall.outcome, FtCall.attempts)).all()
        assert ("rechercher-usager", "ok", 1) in calls and len(calls) == 5  # 1 search + 2 x (statut, diagnostic)
        actions = sorted(s.scalars(select(AccessRecord.action).where(AccessRecord.person_id == pid)))
        assert actions == ["ft.read", "ft.refresh", "ft.refresh"]


def test_each_kind_of_person_and_the_certification_policy(ft_app, db, make_api_key, tmp_path, fake):
    c, _settings = ft_app
    kinds = population(db, tmp_path, foyers=90)
    key = make_api_key(["ft:read"])
    expected = {
        "not_certified": ("found", "S001"),
        "unknown": ("unknown", "S002"),
        "ambiguous": ("ambiguous", "S003"),
        "not_attached": ("refused", "R002"),
        "no_nir": ("no_nir", None),
    }
    for kind, (outcome, code) in expected.items():
        if kind not in kinds:
            continue
        r = _refresh(c, key, kinds[kind][0])
        assert r.status_code == 200, (kind, r.text)
        assert (r.json()["resultat"], r.json()["codeRetour"]) == (outcome, code), kind
    r = c.get(f"/api/v1/persons/{kinds['not_certified'][0]}/france-travail", headers={"X-API-Key": key})
    assert r.json()["identite"]["identiteCertifiee"] == "Non" and r.json()["statut"] is not None  # used, marked
    faults(fake, error_persons_percent=100)
    r = _refresh(c, key, kinds["unknown"][0])
    assert (r.json()["resultat"], r.json()["codeRetour"]) == ("ft_error", "R998")
    faults(fake)
    refusing = ft_settings(db, fake, ft_uncertified="refuse")
    with TestClient(create_app(refusing), raise_server_exceptions=False) as strict:
        r = _refresh(strict, key, kinds["not_certified"][1])
        assert r.json()["resultat"] == "not_certified" and r.json()["statut"] is None
    with session_scope(db) as s:
        kept = s.scalars(select(FtIdentity.jeton_encrypted).where(FtIdentity.person_id == kinds["not_certified"][1]))
        assert list(kept) == [None], "a refused identity's jeton is not kept"


def test_misuses_answer_clearly(ft_app, db, make_api_key, tmp_path):
    c, _settings = ft_app
    kinds = population(db, tmp_path, foyers=20, days=2)
    pid = kinds["certified"][0]
    reader = make_api_key(["persons:read"])
    assert _refresh(c, reader, pid).status_code == 403
    key = make_api_key(["ft:read"])
    r = c.post(f"/api/v1/persons/{pid}/france-travail/refresh", headers={"X-API-Key": key})
    assert (r.status_code, r.json()["error"]) == (422, "agent_required")
    r = _refresh(c, key, pid, **{"X-Agent-Nom": "A|B"})
    assert (r.status_code, r.json()["error"]) == (422, "invalid_agent_header")
    other = make_api_key(["ft:read"], ["054"])
    assert _refresh(c, other, pid).status_code == 404
    assert c.get(f"/api/v1/persons/{pid}/france-travail", headers={"X-API-Key": other}).status_code == 404
    with TestClient(create_app(db), raise_server_exceptions=False) as unconfigured:
        r = _refresh(unconfigured, key, pid)
        assert (r.status_code, r.json()["error"]) == (503, "france_travail_not_configured")
        shown = unconfigured.get(f"/api/v1/persons/{pid}/france-travail", headers={"X-API-Key": key})
        assert shown.status_code == 200 and shown.json()["identite"] is None  # readable without France Travail


def test_the_enregistrement_of_a_diagnostic(ft_app, db, make_api_key, tmp_path, fake):
    c, _settings = ft_app
    kinds = population(db, tmp_path, foyers=20, days=2)
    pid = kinds["certified"][0]
    body = {
        "codeAppellation": "38570",
        "codeRome": "K1304",
        "codeTypologie": "RETOUR_EMPLOI",
        "codeSousTypologie": "RE1",
        "idMetierChiffre": "abc#123",
    }
    reader = make_api_key(["ft:read"])
    url = f"/api/v1/persons/{pid}/france-travail/diagnostics"
    assert c.post(url, json=body, headers=_h(reader)).status_code == 403
    writer = make_api_key(["ft:write"])
    before = fake_stats(fake)["diagnostics_saved"]
    r = c.post(url, json=body, headers=_h(writer))
    assert r.status_code == 200 and r.json()["resultat"] == "enregistre", r.text
    assert fake_stats(fake)["diagnostics_saved"] == before + 1
    bad = c.post(url, json={**body, "codeRome": "cuisine"}, headers=_h(writer))
    assert bad.status_code == 422 and "codeRome" in bad.text
    assert fake_stats(fake)["diagnostics_saved"] == before + 1
    unknown = c.post(f"/api/v1/persons/{kinds['unknown'][0]}/france-travail/diagnostics", json=body, headers=_h(writer))
    # France Travail does not know the person: its answer, not its failure (a 502 before, issue #23 item 12)
    assert (unknown.status_code, unknown.json()["error"]) == (409, "france_travail_not_recorded"), unknown.text
    assert unknown.json()["details"] == {"resultat": "unknown", "codeRetour": "S002"}


def test_a_jeton_france_travail_no_longer_takes_is_replaced_by_one_new_search(ft_app, db, make_api_key, tmp_path, fake):
    c, _settings = ft_app
    kinds = population(db, tmp_path, foyers=20, days=2)
    pid = kinds["certified"][0]
    key = make_api_key(["ft:read"])
    assert _refresh(c, key, pid).json()["resultat"] == "found"
    # France Travail now refuses the stored jeton (expired on its side, though we read a later expiry)
    faults(fake, jeton_ttl_seconds=-1)
    assert _refresh(c, key, pid).json()["jetonReutilise"] is True  # still valid for us: reused, and answered
    with session_scope(db, write=True) as s:
        identity = s.scalars(select(FtIdentity).order_by(FtIdentity.id.desc())).first()
        assert identity is not None
    # make the stored jeton one the fake refuses: a search with a jeton already expired at France Travail
    from app.clients.france_travail import Agent, FranceTravailClient
    from app.security.nir import NirProtector

    settings = ft_settings(db, fake)
    client = FranceTravailClient(settings)
    with session_scope(db) as s:
        from app.models import Person

        p = s.get(Person, pid)
        protector = NirProtector(settings.encryption_keys, settings.hmac_key)
        expired = client.search_by_nir(
            protector.decrypt(p.nir_encrypted), p.date_naissance.isoformat(), Agent.batch("t")
        )
    client.close()
    with session_scope(db, write=True) as s:
        row = s.get(FtIdentity, identity.id)
        row.jeton_encrypted = protector.encrypt(expired.jeton)
    faults(fake)
    r = _refresh(c, key, pid).json()
    assert (r["resultat"], r["jetonReutilise"]) == ("found", False), r  # refused jeton -> one new search
    with session_scope(db) as s:
        assert s.scalar(select(func.count()).select_from(FtIdentity).where(FtIdentity.person_id == pid)) == 2


def test_a_slow_or_absent_france_travail_answers_503_in_time_and_holds_nothing(db, make_api_key, tmp_path, fake):
    kinds = population(db, tmp_path, foyers=20, days=2)
    pid = kinds["certified"][0]
    key = make_api_key(["ft:read", "persons:read"])
    faults(fake, latency_ms=3000)
    slow = ft_settings(db, fake, ft_request_deadline_seconds=1.0, ft_max_concurrency=2)
    try:
        with TestClient(create_app(slow), raise_server_exceptions=False) as c:
            began = time.monotonic()
            with ThreadPoolExecutor(4) as pool:
                refreshes = [pool.submit(_refresh, c, key, pid) for _ in range(3)]
                reads = [pool.submit(c.get, f"/api/v1/persons/{pid}", headers={"X-API-Key": key}) for _ in range(5)]
                assert all(f.result().status_code == 200 for f in reads)
                read_done = time.monotonic() - began
                answers = [f.result() for f in refreshes]
            assert read_done < 2.5, "reads waited for France Travail"
            for r in answers:
                assert (r.status_code, r.json()["error"]) == (503, "france_travail_unavailable"), r.text
                assert int(r.headers["retry-after"]) >= 1
            assert time.monotonic() - began < 6
    finally:
        faults(fake)
    down = ft_settings(db, "http://127.0.0.1:9", ft_max_attempts=2)
    with TestClient(create_app(down), raise_server_exceptions=False) as c:
        r = _refresh(c, key, pid)
        assert (r.status_code, r.json()["error"]) == (503, "france_travail_unavailable")
        assert c.get(f"/api/v1/persons/{pid}", headers={"X-API-Key": key}).status_code == 200
    with session_scope(db) as s:
        outcomes = set(s.scalars(select(FtCall.outcome)))
        assert outcomes <= {"unavailable", "retried_out"} and outcomes, "what was tried is recorded"
    # a token endpoint that accepts connections and never answers: bounded by the deadline too
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    try:
        silent = ft_settings(db, fake, ft_request_deadline_seconds=1.0)
        silent = silent.model_copy(update={"ft_auth_url": f"http://127.0.0.1:{hole.getsockname()[1]}"})
        with TestClient(create_app(silent), raise_server_exceptions=False) as c:
            began = time.monotonic()
            with ThreadPoolExecutor(3) as pool:
                answers = list(pool.map(lambda _: _refresh(c, key, pid), range(3)))
            assert [r.status_code for r in answers] == [503] * 3
            assert time.monotonic() - began < 4, "a silent token endpoint held the requests"
    finally:
        hole.close()


def test_refreshes_from_many_callers_while_a_flux_is_ingested(ft_app, db, make_api_key, tmp_path):
    c, _settings = ft_app
    held: list = []
    kinds = population(db, tmp_path, foyers=600, days=4, held=held)
    key = make_api_key(["ft:read"])
    persons = (kinds["certified"] + kinds.get("unknown", []))[:12]
    errors: list[str] = []

    def ingest() -> None:
        for path, options in held:
            report = ingest_file(get_engine(db), db, path, options)
            if report.status != "applied":
                errors.append(report.status)

    worker = threading.Thread(target=ingest)
    worker.start()
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda pid: _refresh(c, key, pid), persons * 2))
    worker.join()
    assert not errors
    assert [r.status_code for r in answers] == [200] * len(answers), [r.text for r in answers if r.status_code != 200]
    with session_scope(db) as s:
        refreshes = select(func.count()).select_from(AccessRecord).where(AccessRecord.action == "ft.refresh")
        assert s.scalar(refreshes) == len(answers)


def test_slow_france_travail_refreshes_never_hold_a_local_read_and_end_by_their_deadline(
    db, fake, make_api_key, tmp_path
):
    """Issue #24 item 5: thirty concurrent refreshes over the admission limit held a person's read 7.7-8 s and
    answered after up to 16.5 s: they now wait in slots of their own, and their deadline counts from arrival."""
    kinds = population(db, tmp_path)
    faults(fake, latency_ms=1500)
    deadline = 4.0
    settings = ft_settings(db, fake, max_concurrent_requests=3, max_partner_requests=3, ft_max_concurrency=2,
                           ft_request_deadline_seconds=deadline)  # fmt: skip
    key = make_api_key(["ft:read", "persons:read"])
    pids = kinds["certified"][:3] * 4
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as c:
            assert c.get(f"/api/v1/persons/{pids[0]}", headers={"X-API-Key": key}).status_code == 200  # key known

            def timed_refresh(pid: int) -> tuple[int, float]:
                began = time.monotonic()
                return _refresh(c, key, pid).status_code, time.monotonic() - began

            with ThreadPoolExecutor(len(pids)) as pool:
                refreshes = [pool.submit(timed_refresh, pid) for pid in pids]
                time.sleep(0.5)  # every slot a refresh could take is taken
                reads = []
                for pid in kinds["certified"][3:6]:
                    began = time.monotonic()
                    r = c.get(f"/api/v1/persons/{pid}", headers={"X-API-Key": key})
                    reads.append((r.status_code, time.monotonic() - began))
                answered = [f.result() for f in refreshes]
    finally:
        faults(fake)
    assert all(code == 200 and took < 1.0 for code, took in reads), reads
    assert all(code in (200, 503) for code, _ in answered), answered
    assert max(took for _, took in answered) < deadline + 1.5, answered  # from arrival, the wait included
