"""The fake France Travail (issue #12), started as a separate process (`passerelle fake-ft serve`) and
spoken to over real HTTP: the token endpoint, the three APIs with their shapes and codes, the header and
scope checks of the real one, and the faults it can be told to make."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator

import httpx
import pytest

from app.france_travail.fake import FakeState, Faults

SCOPE = (
    "api_rechercher-usagerv2 rechercheusager profil_accedant api_contrat-usagerv2 statutcontratusager "
    "api_diagnosticargumentev4 diagnosticusageragent"
)
AGENT = {"pa-nom-agent": "BATCH", "pa-prenom-agent": "passerelle", "pa-identifiant-agent": "BATCH"}
SEARCH = "/partenaire/rechercher-usager/v2/usagers/par-datenaissance-et-nir"


@pytest.fixture
def http(fake) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake, timeout=10, follow_redirects=False) as client:
        client.post("/_fake/faults", json={"rate_429": 0, "rate_503": 0, "rate_r999": 0, "rate_malformed": 0,
                                           "rate_reset": 0, "retry_after": 1, "jeton_ttl_seconds": 86400,
                                           "latency_ms": 0, "error_persons_percent": 0})  # fmt: skip
        yield client


def _token(http: httpx.Client, **over: str) -> httpx.Response:
    form = {"grant_type": "client_credentials", "client_id": "passerelle-fake", "client_secret": "fake-secret",
            "scope": SCOPE} | over  # fmt: skip
    return http.post("/connexion/oauth2/access_token", params={"realm": "/agent"}, data=form)


def _headers(http: httpx.Client) -> dict[str, str]:
    return {"Authorization": f"Bearer {_token(http).json()['access_token']}"} | AGENT


def _nir_of(kind: str, error_persons_percent: int = 0) -> str:
    state = FakeState(seed=3, faults=Faults(error_persons_percent=error_persons_percent))
    for n in range(10_000):
        nir = f"1{n:04d}55545123"[:13]
        if state.kind(nir) == kind:
            return nir
    raise AssertionError(kind)


def test_the_token_endpoint(http):
    ok = _token(http)
    assert ok.status_code == 200 and ok.json()["token_type"] == "Bearer" and ok.json()["expires_in"] == 1499
    assert _token(http, client_secret="wrong").json()["error"] == "invalid_client"
    assert _token(http, grant_type="password").json()["error"] == "unsupported_grant_type"
    assert _token(http, scope="api_nimporte").json()["error"] == "invalid_scope"


def test_headers_and_scopes_are_checked_like_the_real_one(http):
    headers = _headers(http)
    body = {"nir": _nir_of("certified"), "dateNaissance": "1990-01-15"}
    assert (
        http.post(SEARCH, json=body, headers={k: v for k, v in headers.items() if k != "pa-nom-agent"}).status_code
        == 302
    )
    assert http.post(SEARCH, json=body, headers=headers | {"pa-nom-agent": ""}).status_code == 401
    assert http.post(SEARCH, json=body, headers=headers | {"pa-nom-agent": "A|B"}).status_code == 400
    assert http.post(SEARCH, json=body, headers=AGENT).status_code == 401
    narrow = _token(http, scope="api_contrat-usagerv2 statutcontratusager").json()["access_token"]
    assert http.post(SEARCH, json=body, headers=AGENT | {"Authorization": f"Bearer {narrow}"}).status_code == 403


def test_every_return_code_of_the_search_and_the_person_apis(http):
    headers = _headers(http)
    results = {}
    for kind in ("certified", "not_certified", "unknown", "ambiguous", "not_attached"):
        r = http.post(SEARCH, json={"nir": _nir_of(kind), "dateNaissance": "1990-01-15"}, headers=headers)
        results[kind] = (r.status_code, r.json()["codeRetour"], r.json().get("topIdentiteCertifiee"))
    http.post("/_fake/faults", json={"error_persons_percent": 5})  # a share of persons answered R998
    r = http.post(SEARCH, json={"nir": _nir_of("error", 5), "dateNaissance": "1990-01-15"}, headers=headers)
    results["error"] = (r.status_code, r.json()["codeRetour"], r.json().get("topIdentiteCertifiee"))
    http.post("/_fake/faults", json={"error_persons_percent": 0})
    assert results["certified"] == (200, "S001", "O")
    assert results["not_certified"] == (200, "S001", "N")
    assert results["unknown"] == (200, "S002", "null")
    assert results["ambiguous"] == (200, "S003", "null")
    assert results["error"] == (500, "R998", None)
    assert results["not_attached"] == (403, "R002", None)
    bad = http.post(SEARCH, json={"nir": "12"}, headers=headers)
    assert (bad.status_code, bad.json()["codeRetour"]) == (400, "R997")
    found = http.post(SEARCH, json={"nir": _nir_of("certified"), "dateNaissance": "1990-01-15"}, headers=headers).json()
    jeton = json.loads(base64.b64decode(found["jetonUsager"]))
    assert jeton["expire"] > time.time() * 1000 and "#" in jeton["data"]
    person = headers | {"ft-jeton-usager": found["jetonUsager"]}
    statut = http.get("/partenaire/contrat-usager/v2/contrat", headers=person)
    assert statut.status_code == 204 or statut.json()["m_contrat"]["m_statut"] in (
        "Inscrit",
        "Identifié",
        "Cessé",
        "Radié",
    )
    dossier = http.get("/partenaire/diagnosticargumente/v4/dossiers", headers=person)
    assert dossier.status_code == 204 or "thematiqueContrainte" in dossier.json()
    saved = http.post(
        "/partenaire/diagnosticargumente/v4/diagnostics",
        json={"codeAppellation": "1", "codeRome": "K1304", "codeSousTypologie": "1", "codeTypologie": "1",
              "idMetierChiffre": "x"},
        headers=person,
    )  # fmt: skip
    assert saved.status_code == 200
    http.post("/_fake/faults", json={"jeton_ttl_seconds": -1})
    expired = http.post(SEARCH, json={"nir": _nir_of("certified"), "dateNaissance": "1990-01-15"}, headers=headers)
    late = headers | {"ft-jeton-usager": expired.json()["jetonUsager"]}
    assert http.get("/partenaire/contrat-usager/v2/contrat", headers=late).status_code == 401


def test_faults_set_at_runtime(http):
    headers = _headers(http)
    body = {"nir": _nir_of("certified"), "dateNaissance": "1990-01-15"}
    http.post("/_fake/faults", json={"rate_429": 1, "retry_after": 7})
    r = http.post(SEARCH, json=body, headers=headers)
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    http.post("/_fake/faults", json={"retry_after": None})
    assert "retry-after" not in http.post(SEARCH, json=body, headers=headers).headers
    http.post("/_fake/faults", json={"rate_429": 0, "rate_503": 1})
    assert http.post(SEARCH, json=body, headers=headers).status_code == 503
    http.post("/_fake/faults", json={"rate_503": 0, "rate_r999": 1})
    assert http.post(SEARCH, json=body, headers=headers).json()["codeRetour"] == "R999"
    http.post("/_fake/faults", json={"rate_r999": 0, "rate_malformed": 1})
    with pytest.raises(json.JSONDecodeError):
        http.post(SEARCH, json=body, headers=headers).json()
    http.post("/_fake/faults", json={"rate_malformed": 0, "rate_reset": 1})
    with pytest.raises(httpx.HTTPError):
        http.post(SEARCH, json=body, headers=headers)
    http.post("/_fake/faults", json={"rate_reset": 0, "latency_ms": 300})
    began = time.perf_counter()
    assert http.post(SEARCH, json=body, headers=headers).status_code == 200
    assert time.perf_counter() - began >= 0.3
    assert http.post("/_fake/faults", json={"nonsense": 1}).status_code == 400


@pytest.mark.parametrize(
    ("instant", "day"),
    [
        ("2026-12-06T22:59:59+00:00", "2026-12-06"),  # 23:59:59 in Paris (winter, UTC+1)
        ("2026-12-06T23:00:00+00:00", "2026-12-07"),  # midnight in Paris, still the 6th in UTC
        ("2027-06-30T22:30:00+00:00", "2027-07-01"),  # summer, UTC+2
        ("2027-06-30T21:59:00+00:00", "2027-06-30"),
    ],
)
def test_the_fake_dates_a_decision_on_france_travails_day(instant, day):
    """France Travail dates a decision in Paris, whatever the host's zone: the outbox confirms a decision left
    `sending` by comparing that date with the Paris day of its claim (app.france_travail.outbox.holds_one).
    The fake dated it in the host's zone (UTC on these machines): between midnight in Paris and midnight UTC a
    pushed decision looked a day older than its claim and was sent twice (a CI run after 23:00 UTC)."""
    from datetime import datetime

    from app.france_travail.fake import answers

    assert answers.ft_today(datetime.fromisoformat(instant).timestamp()).isoformat() == day
