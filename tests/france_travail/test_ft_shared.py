"""Issue #27, item 4: France Travail's token and rate cap shared by every process of the service through Redis
(PASSERELLE_REDIS_URL): N processes fetch one token, not N (it is kept encrypted in Redis, under a key that
names no client); a 401 gets one new token for all; the rate cap counts the starts of every process; Redis
unreachable, each process fetches and caps on its own. Real Redis, the fake France Travail as a process."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from pydantic import SecretStr

from app.clients.france_travail import FranceTravailClient, FranceTravailUnavailable, RateCap
from app.clients.ft_shared import SharedRateCap, SharedTokens
from app.kit.shared import SharedRedis
from tests.support.ftsupport import cli_env, fake_stats, faults, ft_settings
from tests.support.processes import spawn
from tests.support.redisupport import keys_of

TOKEN_OF_ONE_PROCESS = """
import hashlib
from app.clients.france_travail import FranceTravailClient
from app.settings import get_settings
client = FranceTravailClient(get_settings())
print(hashlib.sha256(client.token("rechercher-usager").encode()).hexdigest(), flush=True)
client.close()
"""


@pytest.mark.parametrize("shared", [True, False], ids=["redis", "per-process"])
def test_three_processes_fetch_one_token(db, fake, redis_url, redis_prefix, shared):
    """Three processes ask for a token at once while the token endpoint takes half a second: with Redis one
    fetches it and the others wait for it (one token issued, the same for all); without, three."""
    faults(fake, token_latency_ms=500)
    fake_stats(fake, reset=True)
    env = cli_env(db, fake, PASSERELLE_REDIS_PREFIX=redis_prefix)
    if shared:
        env["PASSERELLE_REDIS_URL"] = redis_url
    try:
        procs = [
            spawn([sys.executable, "-c", TOKEN_OF_ONE_PROCESS], env=env, stdout=subprocess.PIPE, text=True)
            for _ in range(3)
        ]
        outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    finally:
        faults(fake)
    assert all(p.returncode == 0 for p in procs) and all(outputs)
    issued = fake_stats(fake)["tokens_issued"]
    if shared:
        assert issued == 1 and len(set(outputs)) == 1
        assert len(keys_of(redis_url, redis_prefix)) == 1  # the token (the fetch lock is gone)
    else:
        assert issued == 3 and len(set(outputs)) == 3


def test_the_token_in_redis_is_encrypted_and_names_no_client(db, fake, redis_url, redis_prefix):
    settings = ft_settings(db, fake, redis_url=SecretStr(redis_url), redis_prefix=redis_prefix)
    fake_stats(fake, reset=True)
    one, two = FranceTravailClient(settings), FranceTravailClient(settings)
    try:
        token = one.token("contrat-usager")
        assert two.token("contrat-usager") == token and fake_stats(fake)["tokens_issued"] == 1
        (key,) = keys_of(redis_url, redis_prefix)
        stored = one.shared_tokens.shared.client.get(key)  # type: ignore[union-attr]
        assert token.encode() not in stored and b"passerelle-fake" not in key and b"contrat" not in key
        # France Travail refused it (401): one new token, which the other process then uses too
        renewed = two.token("contrat-usager", renew=True)
        assert renewed != token and fake_stats(fake)["tokens_issued"] == 2
        assert one.token("contrat-usager", renew=True) == renewed and fake_stats(fake)["tokens_issued"] == 2
        # a call made with it works
        assert one.search_by_nir("1850799123456", "1985-07-01", _agent()).code in ("S001", "S002", "S003")
    finally:
        one.close()
        two.close()


def _agent():
    from app.clients.france_travail import Agent

    return Agent("A123", "MARTIN", "Claire")


def test_a_rejected_token_is_never_handed_out_again(db, redis_url, redis_prefix):
    shared = SharedRedis(redis_url, redis_prefix)
    tokens = SharedTokens(db.model_copy(update={"ft_client_id": "c", "ft_auth_url": "https://ft.test"}), shared)
    fetched: list[str] = []

    def fetch() -> tuple[str, float]:
        fetched.append(f"t{len(fetched)}")
        return fetched[-1], 1499.0

    def no_deadline() -> float | None:
        return None

    first, ttl = tokens.get("scope-a", None, fetch, no_deadline, time.sleep)
    assert (first, fetched) == ("t0", ["t0"]) and ttl == 1499.0
    again, left = tokens.get("scope-a", None, fetch, no_deadline, time.sleep)
    assert again == "t0" and 1400 < left <= 1499 and fetched == ["t0"]
    assert tokens.get("scope-a", "t0", fetch, no_deadline, time.sleep)[0] == "t1"
    assert tokens.get("scope-a", "t0", fetch, no_deadline, time.sleep)[0] == "t1" and fetched == ["t0", "t1"]
    assert tokens.get("scope-b", None, fetch, no_deadline, time.sleep)[0] == "t2"  # a scope: its token
    # a token valid for less than the leeway is used but not shared
    short = SharedTokens(db.model_copy(update={"ft_client_id": "d", "ft_auth_url": "https://ft.test"}), shared)
    assert short.get("scope-a", None, lambda: ("brief", 30.0), no_deadline, time.sleep) == ("brief", 30.0)
    assert short.get("scope-a", None, lambda: ("brief2", 30.0), no_deadline, time.sleep)[0] == "brief2"


def test_while_one_process_fetches_the_token_the_others_wait_for_it(db, redis_url, redis_prefix):
    settings = db.model_copy(update={"ft_client_id": "c", "ft_auth_url": "https://ft.test"})
    first = SharedTokens(settings, SharedRedis(redis_url, redis_prefix))
    second = SharedTokens(settings, SharedRedis(redis_url, redis_prefix))
    fetching, fetched = threading.Event(), []

    def slow_fetch() -> tuple[str, float]:
        fetching.set()
        time.sleep(0.5)
        fetched.append("slow")
        return "the-one", 1499.0

    def other_fetch() -> tuple[str, float]:
        fetched.append("other")
        return "another", 1499.0

    results: list[str] = []

    def one_process() -> None:
        results.append(first.get("s", None, slow_fetch, lambda: None, time.sleep)[0])

    thread = threading.Thread(target=one_process)
    thread.start()
    assert fetching.wait(10)
    waited = []
    assert second.get("s", None, other_fetch, lambda: None, lambda s: waited.append(s) or time.sleep(s))[0] == "the-one"
    thread.join(10)
    assert results == ["the-one"] and fetched == ["slow"] and waited  # it waited, and fetched nothing
    # a deadline passed while waiting: the caller's error, no fetch
    second_lock = SharedTokens(settings, SharedRedis(redis_url, redis_prefix))
    second_lock.shared.client.set(second_lock._key("t") + ":fetching", "someone", px=5000)

    def passed() -> float | None:
        raise FranceTravailUnavailable("France Travail did not answer before the deadline", 1.0)

    with pytest.raises(FranceTravailUnavailable):
        second_lock.get("t", None, other_fetch, passed, time.sleep)
    assert fetched == ["slow"]


def test_the_rate_cap_counts_the_starts_of_every_process(redis_url, redis_prefix):
    """One start every 5 s: a start by one process leaves no room before a deadline 1 s away in the other (its
    own cap alone would let it start)."""
    one, two = SharedRedis(redis_url, redis_prefix), SharedRedis(redis_url, redis_prefix)
    a = SharedRateCap(0.2, time.monotonic, time.sleep, one)
    b = SharedRateCap(0.2, time.monotonic, time.sleep, two)
    a.wait(None)
    with pytest.raises(FranceTravailUnavailable, match="rate cap"):
        b.wait(time.monotonic() + 1.0)
    RateCap(0.2, time.monotonic, time.sleep).wait(time.monotonic() + 1.0)  # alone: room at once
    assert one.failures == two.failures == 0 and len(keys_of(redis_url, redis_prefix)) == 2


def test_redis_unreachable_the_client_fetches_and_caps_on_its_own(db, fake):
    down = "redis://127.0.0.1:1/0"
    settings = ft_settings(
        db, fake, redis_url=SecretStr(down), redis_prefix="passerelle-test-down", ft_rate_per_second=50
    )
    fake_stats(fake, reset=True)
    client = FranceTravailClient(settings)
    try:
        assert client.search_by_nir("1850799123456", "1985-07-01", _agent()).code in ("S001", "S002", "S003")
        assert fake_stats(fake)["tokens_issued"] == 1 and client.shared_tokens.shared.failures >= 1  # type: ignore[union-attr]
    finally:
        client.close()


TOKEN_LOGGED_AT_DEBUG = """
from app.clients.france_travail import FranceTravailClient
from app.logging import configure_logging
from app.settings import get_settings
configure_logging("DEBUG", True)
client = FranceTravailClient(get_settings())
print(client.token("rechercher-usager"), flush=True)
client.close()
"""


def test_the_token_never_reaches_the_logs(db, fake, redis_url, redis_prefix):
    """Fetched, stored in Redis and read back with every log at DEBUG: neither the token nor the Redis URL in
    the log lines."""
    env = cli_env(db, fake, PASSERELLE_REDIS_URL=redis_url, PASSERELLE_REDIS_PREFIX=redis_prefix)
    runs = []
    for _ in range(2):  # the first fetches and stores it, the second reads it from Redis
        proc = spawn([sys.executable, "-c", TOKEN_LOGGED_AT_DEBUG], env=env, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True)  # fmt: skip
        runs.append(proc.communicate(timeout=120))
        assert proc.returncode == 0, runs[-1][1]
    (token, _), (again, _) = ((out.strip(), err) for out, err in runs)
    assert token and again == token
    logs = "".join(err for _, err in runs)
    assert logs and token not in logs and redis_url not in logs
