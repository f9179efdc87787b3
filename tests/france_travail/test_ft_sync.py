"""`passerelle ft sync` and the orientation outbox (issue #12), run as separate processes against the fake
France Travail (itself a separate process), on SQLite and PostgreSQL: outcomes, jeton reuse, resume after a
kill, two runs at once, faults within the rate cap, France Travail down, a refused client."""

from __future__ import annotations

import json
import signal
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.db import get_engine, session_scope
from app.models import AccessRecord, FtCall, FtIdentity, FtOutboxItem, FtSyncItem, FtSyncRun, Person
from app.models.base import utcnow
from app.orientation.service import EventIn, record_event
from tests.support.clock import without_faketime
from tests.support.ftsupport import cli_env, fake_stats, faults, ft_settings, passerelle, population


def _run(env, *args, timeout=120):
    proc = passerelle("ft", "sync", "--departement", "055", *args, env=env)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _count(db, model, *where):
    with session_scope(db) as s:
        return s.scalar(select(func.count()).select_from(model).where(*where)) or 0


@pytest.mark.slow
def test_sync_settles_everyone_the_platform_works_on_and_reuses_jetons(db, tmp_path, fake):
    faults(fake)
    kinds = population(db, tmp_path, foyers=50)
    persons = sum(len(v) for v in kinds.values())
    env = cli_env(db, fake)
    code, out, err = _run(env, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["selected"] == persons and summary["definite"] and not summary["errors_by_code"]
    assert summary["outcomes"]["found"] == len(kinds["certified"]) + len(kinds.get("not_certified", []))
    assert summary["outcomes"].get("unknown", 0) == len(kinds.get("unknown", []))
    assert summary["found_not_certified_used"] == len(kinds.get("not_certified", []))
    assert _count(db, AccessRecord, AccessRecord.action == "ft.sync") == persons  # every read recorded
    searches = _count(db, FtCall, FtCall.api == "rechercher-usager")
    assert searches == persons - len(kinds.get("no_nir", []))
    # the next night: the found persons' jetons are reused, only the others are searched again
    code, out, err = _run(env, "--json")
    assert code == 0, err
    found = summary["outcomes"]["found"]
    assert _count(db, FtCall, FtCall.api == "rechercher-usager") == searches + (searches - found)
    # --only-missing: the found, unknown, ambiguous and refused are settled; --limit bounds a run
    code, out, _ = _run(env, "--only-missing", "--json")
    assert json.loads(out)["selected"] == len(kinds.get("no_nir", []))
    code, out, _ = _run(env, "--limit", "3", "--json")
    assert json.loads(out)["selected"] == 3
    code, out, _ = _run(env, "--stale-days", "1", "--json")
    never_answered = len(kinds.get("no_nir", [])) + len(kinds.get("not_attached", []))
    assert json.loads(out)["selected"] == never_answered  # no successful exchange: no NIR, refused (R002)
    table_code, table, _ = _run(env, "--limit", "2")
    assert table_code == 0 and "outcome" in table and "persons" in table


@pytest.mark.slow
def test_a_sync_killed_halfway_resumes_without_calling_anyone_twice(db, tmp_path, fake):
    kinds = population(db, tmp_path, foyers=60)
    persons = sum(len(v) for v in kinds.values())
    faults(fake, latency_ms=120)
    env = cli_env(db, fake, PASSERELLE_FT_MAX_CONCURRENCY="2")
    try:
        proc = passerelle("ft", "sync", "--departement", "055", "--json", env=env)
        deadline = time.monotonic() + 60
        while _count(db, FtSyncItem) < 10:
            assert time.monotonic() < deadline and proc.poll() is None, "the sync did not start"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        settled = _count(db, FtSyncItem)
        assert 10 <= settled < persons
        with session_scope(db) as s:
            first_run = set(s.scalars(select(FtSyncItem.person_id)))
            (run,) = s.scalars(select(FtSyncRun)).all()
            assert run.status == "running"
        faults(fake)
        code, out, err = _run(env, "--json")
        assert code == 0, err
        summary = json.loads(out)
        assert summary["resumed"] and summary["run_id"] == run.id and summary["settled_before"] == settled
        assert summary["selected"] == persons - settled
        with session_scope(db) as s:
            assert s.scalar(select(FtSyncRun.status)) == "done"
            searched = s.execute(
                select(FtCall.person_id, func.count())
                .where(FtCall.api == "rechercher-usager", FtCall.person_id.in_(first_run))
                .group_by(FtCall.person_id)
            ).all()
            assert all(n == 1 for _pid, n in searched), "a person settled before the kill was searched again"
            assert s.scalar(select(func.count()).select_from(FtSyncItem)) == persons
    finally:
        faults(fake)


@pytest.mark.slow
def test_two_syncs_at_once_the_second_says_why_and_exits_5(db, tmp_path, fake):
    population(db, tmp_path, foyers=40)
    faults(fake, latency_ms=150)
    env = cli_env(db, fake, PASSERELLE_FT_MAX_CONCURRENCY="2")
    try:
        first = passerelle("ft", "sync", "--departement", "055", "--json", env=env)
        deadline = time.monotonic() + 60
        while _count(db, FtSyncItem) < 2:
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.1)
        code, _out, err = _run(env)
        assert code == 5, err
        assert "another ft sync of département 055 is running" in err
        _out, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
    finally:
        faults(fake)
    code, _out, err = _run(env, "--limit", "1")
    assert code == 0, err


@pytest.mark.slow
def test_a_sync_while_a_flux_is_ingested(db, tmp_path, fake):
    from app.flux.loader import ingest_file

    held: list = []
    population(db, tmp_path, foyers=400, days=4, held=held)
    faults(fake, latency_ms=20)
    env = cli_env(db, fake, PASSERELLE_FT_MAX_CONCURRENCY="4")
    try:
        proc = passerelle("ft", "sync", "--departement", "055", "--json", env=env)
        time.sleep(0.5)
        for path, options in held:
            assert ingest_file(get_engine(db), db, path, options).status == "applied"
        out, err = proc.communicate(timeout=180)
    finally:
        faults(fake)
    assert proc.returncode == 0, err
    assert json.loads(out)["definite"] and "database is locked" not in err


def test_under_503_and_429_every_person_ends_definite_within_the_rate_cap(db, tmp_path, fake):
    kinds = population(db, tmp_path, foyers=50)
    persons = sum(len(v) for v in kinds.values())
    faults(fake, rate_503=0.10, rate_429=0.05, retry_after=0, rate_r999=0.03, rate_reset=0.02)
    fake_stats(fake, reset=True)
    env = cli_env(db, fake, PASSERELLE_FT_MAX_CONCURRENCY="6", PASSERELLE_FT_RATE_PER_SECOND="25",
                  PASSERELLE_FT_MAX_ATTEMPTS="8", PASSERELLE_FT_CIRCUIT_FAILURES="50")  # fmt: skip
    try:
        code, out, err = _run(env, "--json")
    finally:
        faults(fake)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["definite"] and sum(summary["outcomes"].values()) == persons
    stats = fake_stats(fake)
    # 25 per second leave the client (exact, RateCap); arrivals at the fake may bunch by a call or two
    assert stats["max_calls_in_one_second"] <= 27, stats
    with session_scope(db) as s:
        assert s.scalar(select(func.max(FtCall.attempts))) > 1, "the faults were retried"


@pytest.mark.slow
def test_france_travail_down_stops_the_run_resumable_and_a_refused_client_says_so(db, tmp_path, fake):
    population(db, tmp_path, foyers=20, days=2)
    down = cli_env(db, "http://127.0.0.1:9", PASSERELLE_FT_MAX_ATTEMPTS="1", PASSERELLE_FT_MAX_CONCURRENCY="2",
                   PASSERELLE_FT_CIRCUIT_COOLDOWN_SECONDS="0.1")  # fmt: skip
    down = without_faketime(down)  # it waits out the circuit's cool-down (tests/support/clock.py)
    code, _out, err = _run(down, "--limit", "1")  # the documented configuration check (issue #24 item 2)
    assert code == 3 and "stayed unavailable" in err and "127.0.0.1:9" in err, err
    code, _out, err = _run(down)
    assert code == 3 and "stayed unavailable" in err, err
    assert _count(db, FtSyncItem, FtSyncItem.outcome != "no_nir") == 0  # nobody else settled
    with session_scope(db) as s:
        assert s.scalar(select(FtSyncRun.status).order_by(FtSyncRun.id.desc()).limit(1)) == "running"  # resumable
    refused = cli_env(db, fake, PASSERELLE_FT_CLIENT_SECRET="wrong-secret")
    code, _out, err = _run(refused)
    assert code == 3 and "invalid_client" in err, err
    unconfigured = {k: v for k, v in cli_env(db, fake).items() if not k.startswith("PASSERELLE_FT_")}
    code, _out, err = _run(unconfigured)
    assert code == 3 and "not configured" in err
    code, _out, err = _run(cli_env(db, fake), "--limit", "0")
    assert code == 2


def test_orientation_decisions_reach_france_travail_once(db, tmp_path, fake):
    from app.clients.france_travail import FranceTravailClient
    from app.france_travail.outbox import push_due, sending_expires

    faults(fake)
    kinds = population(db, tmp_path, foyers=30, days=2)
    settings = ft_settings(db, fake, ft_orientation_push=True)
    fake_stats(fake, reset=True)
    known, unknown = kinds["certified"][0], kinds["unknown"][0]
    decision = {"type": "orientation", "organisme": "FRANCE_TRAVAIL", "type_parcours": "professionnel"}
    with session_scope(settings, write=True) as s:
        for pid in (known, unknown):
            p = s.get(Person, pid)
            for _ in range(2):  # the platform sends the same event twice: queued once
                event = EventIn.model_validate({**decision, "date": p.first_received_on, "external_id": f"o-{pid}"})
                record_event(s, settings, p, event, recorded_by="test")
        p = s.get(Person, kinds["certified"][1])
        odd = {**decision, "organisme": "CCAS", "date": p.first_received_on, "external_id": "o-ccas"}
        record_event(s, settings, p, EventIn.model_validate(odd), recorded_by="test")
    with session_scope(db) as s:
        statuses = dict(s.execute(select(FtOutboxItem.person_id, FtOutboxItem.status)).all())
    assert statuses == {known: "pending", unknown: "pending", kinds["certified"][1]: "skipped"}
    client = FranceTravailClient(settings)
    try:
        counts = push_due(get_engine(settings), settings, client)
        assert counts == {"sent": 1, "retry": 1}, counts
        assert fake_stats(fake)["orientations"] == 1
        assert push_due(get_engine(settings), settings, client) == {}  # nothing due: the retry waits
        assert fake_stats(fake)["orientations"] == 1
        # a process died after France Travail took it, before recording it: confirmed, not sent again
        long_ago = utcnow() - sending_expires(settings) - timedelta(seconds=1)
        with session_scope(settings, write=True) as s:
            item = s.scalar(select(FtOutboxItem).where(FtOutboxItem.person_id == known))
            item.status = "sending"
        assert push_due(get_engine(settings), settings, client) == {}  # maybe a live sender: left alone
        with session_scope(settings, write=True) as s:
            s.get(FtOutboxItem, item.id).next_attempt_at = long_ago
        assert push_due(get_engine(settings), settings, client) == {"confirmed": 1}
        assert fake_stats(fake)["orientations"] == 1
        # ... or died before sending: back to pending, then sent
        with session_scope(settings, write=True) as s:
            p = s.get(Person, kinds["certified"][2])
            event = EventIn.model_validate({**decision, "date": p.first_received_on, "external_id": "o-3"})
            record_event(s, settings, p, event, recorded_by="test")
            s.flush()
            s.execute(
                FtOutboxItem.__table__.update()
                .where(FtOutboxItem.person_id == p.id)
                .values(status="sending", attempts=1, next_attempt_at=long_ago)
            )
        assert push_due(get_engine(settings), settings, client) == {"requeued": 1, "sent": 1}
        assert fake_stats(fake)["orientations"] == 2
    finally:
        client.close()
    with session_scope(db) as s:
        assert s.scalar(select(func.count()).select_from(FtIdentity)) >= 3


def test_two_pushes_at_once_send_each_decision_once(db, tmp_path, fake):
    import threading

    from app.clients.france_travail import FranceTravailClient
    from app.france_travail.outbox import push_due

    faults(fake, latency_ms=30)
    kinds = population(db, tmp_path, foyers=40, days=2)
    settings = ft_settings(db, fake, ft_orientation_push=True)
    fake_stats(fake, reset=True)
    chosen = kinds["certified"][:8]
    with session_scope(settings, write=True) as s:
        for pid in chosen:
            p = s.get(Person, pid)
            body = {"type": "orientation", "organisme": "DEPARTEMENT", "type_parcours": "social",
                    "date": p.first_received_on, "external_id": f"o-{pid}"}  # fmt: skip
            record_event(s, settings, p, EventIn.model_validate(body), recorded_by="test")
    results: list = []

    def push() -> None:
        client = FranceTravailClient(settings)
        try:
            results.append(push_due(get_engine(settings), settings, client))
        finally:
            client.close()

    try:
        threads = [threading.Thread(target=push) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        faults(fake)
    assert sum(r.get("sent", 0) for r in results) == len(chosen), (results, fake_stats(fake))
    assert fake_stats(fake)["orientations"] == len(chosen)
    with session_scope(db) as s:
        assert set(s.scalars(select(FtOutboxItem.status))) == {"sent"}


@pytest.mark.parametrize("push", ["false"])
def test_ft_push_says_when_the_push_is_off(db, fake, push):
    proc = passerelle("ft", "push", env=cli_env(db, fake, PASSERELLE_FT_ORIENTATION_PUSH=push))
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "PASSERELLE_FT_ORIENTATION_PUSH" in err


@pytest.mark.slow
def test_a_sync_stops_within_seconds_of_sigterm_while_the_token_endpoint_hangs(db, tmp_path, fake):
    """Issue #24 item 5: with France Travail's token endpoint hanging, `ft sync` took 227 s to stop on SIGTERM."""
    population(db, tmp_path, foyers=20, days=2)
    faults(fake, token_latency_ms=120_000)
    try:
        env = without_faketime(cli_env(db, fake, PASSERELLE_FT_MAX_CONCURRENCY="2"))
        proc = passerelle("ft", "sync", "--departement", "055", env=env)
        time.sleep(4)  # its threads wait on the token endpoint
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        asked = time.monotonic()
        _out, err = proc.communicate(timeout=60)
        took = time.monotonic() - asked
    finally:
        faults(fake)
    assert proc.returncode == 130 and "interrupted" in err, err[-2000:]
    assert took < 10, f"stopped {took:.1f} s after SIGTERM"
    with session_scope(db) as s:
        assert s.scalar(select(FtSyncRun.status).order_by(FtSyncRun.id.desc()).limit(1)) == "running"  # resumable


@pytest.mark.slow
def test_a_sync_keeps_to_its_time_budget_and_the_next_run_goes_on(db, tmp_path, fake):
    population(db, tmp_path, foyers=30, days=2)
    faults(fake, latency_ms=700)
    try:
        env = without_faketime(cli_env(db, fake, PASSERELLE_FT_MAX_CONCURRENCY="2"))
        began = time.monotonic()
        code, _out, err = _run(env, "--budget", "2")
        took = time.monotonic() - began
    finally:
        faults(fake)
    assert code == 0 and "time budget spent" in err, err[-2000:]
    assert took < 15, took
    settled = _count(db, FtSyncItem)
    assert settled > 0
    code, _out, err = _run(cli_env(db, fake))
    assert code in (0, 1), err[-2000:]
    assert "resum" in err or _count(db, FtSyncItem) > settled
    with session_scope(db) as s:
        assert s.scalar(select(func.count()).select_from(FtSyncRun)) == 1, "the same run, resumed"
        assert s.scalar(select(FtSyncRun.status)) == "done"


def test_an_interrupted_push_is_confirmed_only_by_the_same_orientation(db, tmp_path, fake):
    """Issue #24 item 7: `ft push`'s "already sent?" check compared the parcours alone: a person France
    Travail already knew in the same parcours with another organisme (an earlier decision) made a decision
    that never reached it look confirmed, and it was never sent."""
    from app.clients.france_travail import FranceTravailClient
    from app.france_travail.outbox import push_due, sending_expires

    faults(fake)
    kinds = population(db, tmp_path, foyers=30, days=2)
    settings = ft_settings(db, fake, ft_orientation_push=True)
    fake_stats(fake, reset=True)
    pid = kinds["certified"][3]
    earlier = {"type": "orientation", "organisme": "DEPARTEMENT", "type_parcours": "professionnel"}
    client = FranceTravailClient(settings)
    try:
        with session_scope(settings, write=True) as s:
            p = s.get(Person, pid)
            event = EventIn.model_validate({**earlier, "date": p.first_received_on, "external_id": "o-cd"})
            record_event(s, settings, p, event, recorded_by="test")
        assert push_due(get_engine(settings), settings, client) == {"sent": 1}  # France Travail: PED, CD
        later = {**earlier, "organisme": "FRANCE_TRAVAIL", "external_id": "o-ft"}
        with session_scope(settings, write=True) as s:
            p = s.get(Person, pid)
            record_event(s, settings, p, EventIn.model_validate({**later, "date": p.first_received_on}),
                         recorded_by="test")  # fmt: skip
            s.flush()
            long_ago = utcnow() - sending_expires(settings) - timedelta(seconds=1)
            s.execute(  # its sender died before France Travail took it
                FtOutboxItem.__table__.update()
                .where(FtOutboxItem.person_id == pid, FtOutboxItem.status == "pending")
                .values(status="sending", attempts=1, next_attempt_at=long_ago)
            )
        assert push_due(get_engine(settings), settings, client) == {"requeued": 1, "sent": 1}
        assert fake_stats(fake)["orientations"] == 2
    finally:
        client.close()
