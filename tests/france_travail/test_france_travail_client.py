"""The France Travail client (issue #12, first part): token, headers, retries and circuit breaker with respx;
the three calls over real HTTP against the fake France Travail started as a separate process."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path

import httpx
import pytest
import respx
from pydantic import SecretStr

from app.clients.france_travail import (
    Agent,
    FranceTravailClient,
    FranceTravailError,
    FranceTravailUnavailable,
)
from app.france_travail.fake import FakeState
from app.settings import Settings

AUTH, API = "https://auth.test", "https://api.test/partenaire"
TOKEN_URL = f"{AUTH}/connexion/oauth2/access_token"
SEARCH_URL = f"{API}/rechercher-usager/v2/usagers/par-datenaissance-et-nir"
AGENT = Agent("A123", "MARTIN", "Claire")


def _settings(tmp_path: Path, **over) -> Settings:
    values = {
        "env": "test",
        "data_dir": tmp_path,
        "ft_auth_url": AUTH,
        "ft_api_url": API,
        "ft_client_id": "passerelle-fake",
        "ft_client_secret": SecretStr("fake-secret"),
        "ft_backoff_seconds": 0.01,
        "ft_circuit_failures": 2,
        "ft_circuit_cooldown_seconds": 30,
    }
    return Settings(**(values | over))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _client(tmp_path, clock=None, **over) -> tuple[FranceTravailClient, Clock]:
    clock = clock or Clock()
    return FranceTravailClient(_settings(tmp_path, **over), sleep=clock.sleep, clock=clock), clock


def _token_route(mock, expires_in=1499):
    return mock.post(TOKEN_URL).mock(
        return_value=httpx.Response(200, json={"access_token": "t1", "expires_in": expires_in, "token_type": "Bearer"})
    )


JETON = base64.b64encode(json.dumps({"vers": "1", "expire": 4102444800000, "data": "u#c"}).encode()).decode()
FOUND = {"codeRetour": "S001", "message": "Usager trouvé", "topIdentiteCertifiee": "O", "jetonUsager": JETON}


@respx.mock
def test_the_token_is_cached_renewed_before_expiry_and_once_on_a_401(tmp_path):
    token = _token_route(respx)
    search = respx.post(SEARCH_URL).mock(return_value=httpx.Response(200, json=FOUND))
    client, clock = _client(tmp_path)
    client.search_by_nir("1900555545123", "1990-01-15", AGENT)
    client.search_by_nir("1900555545123", "1990-01-15", AGENT)
    assert token.call_count == 1
    form = token.calls[0].request.content.decode()
    assert "client_secret=fake-secret" in form and "grant_type=client_credentials" in form
    assert token.calls[0].request.url.params["realm"] == "/agent"
    clock.now += 1499 - 30  # within the last minute: renewed before use
    client.search_by_nir("1900555545123", "1990-01-15", AGENT)
    assert token.call_count == 2
    search.side_effect = [httpx.Response(401), httpx.Response(200, json=FOUND)]
    assert client.search_by_nir("1900555545123", "1990-01-15", AGENT).code == "S001"
    assert token.call_count == 3
    sent = search.calls[-1].request.headers
    assert (sent["pa-identifiant-agent"], sent["pa-nom-agent"], sent["authorization"]) == (
        "A123",
        "MARTIN",
        "Bearer t1",
    )


@respx.mock
def test_one_renewal_at_a_time_under_concurrency(tmp_path):
    token = _token_route(respx)
    respx.post(SEARCH_URL).mock(return_value=httpx.Response(200, json=FOUND))
    client, _ = _client(tmp_path)
    threads = [
        threading.Thread(target=client.search_by_nir, args=("1900555545123", "1990-01-15", AGENT)) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert token.call_count == 1


@respx.mock
def test_retries_and_what_is_never_retried(tmp_path):
    _token_route(respx)
    search = respx.post(SEARCH_URL)
    client, clock = _client(tmp_path, ft_circuit_failures=10)
    search.side_effect = [httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(200, json=FOUND)]
    assert client.search_by_nir("1900555545123", "1990-01-15", AGENT).code == "S001"
    assert clock.slept == [7.0]
    search.side_effect = [httpx.Response(429), httpx.Response(200, json=FOUND)]
    client.search_by_nir("1900555545123", "1990-01-15", AGENT)
    assert clock.slept[-1] == 60.0  # no Retry-After: a minute
    search.side_effect = [
        httpx.Response(503, json={"codeRetour": "R999"}),
        httpx.ConnectError("reset"),
        httpx.Response(502),
        httpx.Response(200, json=FOUND),
    ]
    assert client.search_by_nir("1900555545123", "1990-01-15", AGENT).code == "S001"
    for answer, code in (
        (httpx.Response(200, json={"codeRetour": "S002", "topIdentiteCertifiee": "null"}), "S002"),
        (httpx.Response(200, json={"codeRetour": "S003", "topIdentiteCertifiee": None}), "S003"),
        (httpx.Response(404), "S002"),
    ):
        search.side_effect = None
        search.return_value = answer
        before = search.call_count
        assert client.search_by_nir("1900555545123", "1990-01-15", AGENT).code == code
        assert search.call_count == before + 1  # not retried
    for answer in (httpx.Response(400, json={"codeRetour": "R997"}), httpx.Response(403, json={"codeRetour": "R001"}),
                   httpx.Response(500, json={"codeRetour": "R998"})):  # fmt: skip
        search.return_value = answer
        before = search.call_count
        with pytest.raises(FranceTravailError):
            client.search_by_nir("1900555545123", "1990-01-15", AGENT)
        assert search.call_count == before + 1
    search.return_value = httpx.Response(302, headers={"Location": "/login"})
    with pytest.raises(FranceTravailError, match="agent header"):
        client.search_by_nir("1900555545123", "1990-01-15", AGENT)
    search.return_value = httpx.Response(200, text='{"codeRetour": "S0')
    with pytest.raises(FranceTravailError, match="malformed"):
        client.search_by_nir("1900555545123", "1990-01-15", AGENT)


@respx.mock
def test_the_circuit_opens_then_half_opens(tmp_path):
    _token_route(respx)
    search = respx.post(SEARCH_URL).mock(return_value=httpx.Response(503))
    client, clock = _client(tmp_path, ft_max_attempts=2)
    for _ in range(2):
        with pytest.raises(FranceTravailUnavailable):
            client.search_by_nir("1900555545123", "1990-01-15", AGENT)
    calls = search.call_count
    with pytest.raises(FranceTravailUnavailable) as exc:
        client.search_by_nir("1900555545123", "1990-01-15", AGENT)
    assert search.call_count == calls and exc.value.retry_after > 0  # open: answered at once
    clock.now += 31
    search.mock(return_value=httpx.Response(200, json=FOUND))
    assert client.search_by_nir("1900555545123", "1990-01-15", AGENT).code == "S001"


@respx.mock
def test_bad_agents_and_a_refused_client(tmp_path):
    respx.post(TOKEN_URL).mock(return_value=httpx.Response(400, json={"error": "invalid_client"}))
    client, _ = _client(tmp_path)
    with pytest.raises(FranceTravailError, match=r"\|"):
        client.search_by_nir("1900555545123", "1990-01-15", Agent("A|1", "X", "Y"))
    with pytest.raises(FranceTravailError, match="token endpoint refused"):
        client.search_by_nir("1900555545123", "1990-01-15", AGENT)
    with pytest.raises(FranceTravailError, match="not configured"):
        FranceTravailClient(Settings(env="test", data_dir=tmp_path))


def test_the_three_calls_against_the_fake(fake, tmp_path):
    client = FranceTravailClient(_settings(tmp_path, ft_auth_url=fake, ft_api_url=f"{fake}/partenaire"))
    state = FakeState(seed=3)
    nirs = {state.kind(f"1{n:04d}55545123"[:13]): f"1{n:04d}55545123"[:13] for n in range(400)}
    try:
        found = client.search_by_nir(nirs["certified"], "1990-01-15", Agent.batch("ft-sync"))
        assert (found.code, found.certified) == ("S001", True) and found.jeton and found.jeton_expires_ms
        statut = client.statut(found.jeton, Agent.batch("ft-sync"))
        assert statut is None or statut["m_statut"] in ("Inscrit", "Identifié", "Cessé", "Radié")
        dossier = client.dossier(found.jeton, Agent.batch("ft-sync"))
        assert dossier is None or "besoinsParDiagnostic" in dossier
        assert client.search_by_nir(nirs["not_certified"], "1990-01-15", AGENT).certified is False
        assert client.search_by_nir(nirs["unknown"], "1990-01-15", AGENT).code == "S002"
    finally:
        client.close()


STATUT_URL = f"{API}/contrat-usager/v2/contrat"
DOSSIER_URL = f"{API}/diagnosticargumente/v4/dossiers"


@respx.mock
def test_every_form_of_top_identite_certifiee(tmp_path):
    _token_route(respx)
    search = respx.post(SEARCH_URL)
    client, _ = _client(tmp_path)
    for given, read in (("O", True), ("N", False), ("null", None), (None, None)):
        search.return_value = httpx.Response(200, json={**FOUND, "topIdentiteCertifiee": given})
        assert client.search_by_nir("1900555545123", "1990-01-15", AGENT).certified is read
    search.return_value = httpx.Response(200, json={**FOUND, "jetonUsager": None})
    with pytest.raises(FranceTravailError, match="no jetonUsager"):
        client.search_by_nir("1900555545123", "1990-01-15", AGENT)


@respx.mock
def test_the_rate_cap_spaces_calls_and_the_concurrency_is_bounded(tmp_path):
    import time as real_time

    _token_route(respx)
    in_flight, most = [0], [0]
    lock = threading.Lock()

    def slow(request):
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        real_time.sleep(0.05)
        with lock:
            in_flight[0] -= 1
        return httpx.Response(200, json=FOUND)

    respx.post(SEARCH_URL).mock(side_effect=slow)
    client = FranceTravailClient(_settings(tmp_path, ft_max_concurrency=2, ft_rate_per_second=40))
    began = real_time.monotonic()
    threads = [
        threading.Thread(target=client.search_by_nir, args=("1900555545123", "1990-01-15", AGENT)) for _ in range(12)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 2  # never more than the configured concurrency
    assert real_time.monotonic() - began >= 11 / 40  # 12 starts, 1/40 s apart at least


@respx.mock
def test_a_deadline_bounds_retries_and_waits(tmp_path):
    import time as real_time

    _token_route(respx)
    search = respx.post(SEARCH_URL).mock(return_value=httpx.Response(503))
    client = FranceTravailClient(
        _settings(tmp_path, ft_backoff_seconds=0.2, ft_max_attempts=10, ft_circuit_failures=50)
    )
    began = real_time.monotonic()
    trace: list = []
    with pytest.raises(FranceTravailUnavailable, match="deadline"):
        client.search_by_nir("1900555545123", "1990-01-15", AGENT, deadline=began + 0.5, trace=trace)
    assert real_time.monotonic() - began < 0.6 and search.call_count < 10
    assert trace[0].attempts == search.call_count and trace[0].outcome == "retried_out"


@respx.mock
def test_a_jeton_expired_between_search_and_statut_is_searched_again_once(tmp_path):
    from app.france_travail import service as ft

    _token_route(respx)
    search = respx.post(SEARCH_URL).mock(return_value=httpx.Response(200, json=FOUND))
    statut = respx.get(STATUT_URL)
    statut.side_effect = [
        httpx.Response(401),  # the token is renewed once...
        httpx.Response(401),  # ... still refused: the jeton is, so one new search
        httpx.Response(200, json={"m_contrat": {"m_statut": "Inscrit", "m_date_effet_statut": "2025-06-28",
                                                "m_duree_inscription_12": 9}}),
    ]  # fmt: skip
    respx.get(DOSSIER_URL).mock(return_value=httpx.Response(204))
    client, _ = _client(tmp_path)
    ref = ft.PersonRef(1, "055", "1900555545123", "1990-01-15", None, None, None)
    ex = ft.exchange(client, client.settings, ref, AGENT)
    assert (ex.outcome, search.call_count, statut.call_count) == ("found", 2, 3)
    assert ex.fetched["statut"]["statutDE"] == "Inscrit" and ex.fetched["statut"]["dureeInscription12"] == 9
    assert ex.fetched["diagnostic"] is None  # 204: France Travail has none
    statut.side_effect = None
    statut.return_value = httpx.Response(200, json={"m_contrat": {"m_statut": "Chômeur"}})
    ex = ft.exchange(client, client.settings, ref, AGENT)
    assert ex.outcome == "malformed" and "m_contrat.m_statut" in (ex.message or "")
    respx.post(TOKEN_URL).mock(return_value=httpx.Response(400, json={"error": "invalid_client"}))
    fresh, _ = _client(tmp_path)
    assert ft.exchange(fresh, fresh.settings, ref, AGENT).outcome == "token_refused"


def test_the_rate_cap_never_lets_more_starts_than_its_rate_in_any_second():
    from app.clients.france_travail import RateCap

    clock = Clock()
    cap = RateCap(5, clock, clock.sleep)
    starts = []
    for n in range(40):
        if n % 7 == 0:
            clock.now += 0.013  # work between calls, at odd moments
        cap.wait(None)
        starts.append(clock.now)
    for i, at in enumerate(starts):
        assert sum(1 for t in starts[i:] if t < at + 1.0) <= 5
    assert starts[-1] - starts[0] >= 39 / 5 - 0.01  # and no slower than the rate
    with pytest.raises(FranceTravailUnavailable, match="rate cap"):
        cap.wait(clock.now + 0.05)  # the next start is 0.2 s away: beyond this deadline
