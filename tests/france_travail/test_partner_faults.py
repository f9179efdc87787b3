"""The France Travail jobs under faults (issue #24): `passerelle ft sync` and `passerelle ft push` killed
(kill -9) early, midway and late, then run again: nobody settled is called twice, no orientation reaches
France Travail twice, the final tables are an uninterrupted run's, the audit chain verifies, no process is
left behind. And France Travail's faults (503, connection resets, 429 with Retry-After, malformed answers,
silence beyond the deadline): the right exit code (0/1 per-person errors, 3 when it stays unavailable,
never 4), a bounded duration, a resumable run. Separate processes against the fake France Travail (itself a
separate process), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from app.db import session_scope
from app.models import FtCall, FtOutboxItem, FtSyncItem, FtSyncRun, Person
from app.models.base import utcnow
from app.orientation.service import EventIn, record_event
from tests.support.clock import without_faketime
from tests.support.ftsupport import cli_env, fake_stats, faults, ft_settings, passerelle, population
from tests.support.processes import nothing_left

MOMENTS = {"early": 0.0, "midway": 0.5, "late": 0.8}  # the share of the work committed when killed

# what an uninterrupted run makes of each kind of person at the fake France Travail (seed 3):
# test_an_uninterrupted_sync_settles_each_kind_of_person checks it
REFERENCE = {"certified": "found", "not_certified": "found", "unknown": "unknown", "ambiguous": "ambiguous",
             "not_attached": "refused", "no_nir": "no_nir"}  # fmt: skip


def _count(db, model, *where) -> int:
    with session_scope(db) as s:
        return s.scalar(select(func.count()).select_from(model).where(*where)) or 0


def _run(env, *args, timeout=120):
    proc = passerelle(*args, env=env)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _kill_when(proc, progress, target: int, timeout: float = 60) -> None:
    """kill -9 `proc` (the process alone, not its group) once `progress()` reaches `target`; then its
    process group must be empty: nothing it started outlives it."""
    deadline = time.monotonic() + timeout
    while progress() < target:
        assert proc.poll() is None, f"the job ended before the kill ({proc.returncode}): {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "the job made no progress"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    nothing_left(proc.pid)


def _audit_verifies(env) -> None:
    code, out, err = _run(env, "audit", "verify")
    assert code == 0, (out, err)


def _outcomes(db) -> dict[int, str]:
    with session_scope(db) as s:
        return dict(s.execute(select(FtSyncItem.person_id, FtSyncItem.outcome)).all())


def _expected(kinds) -> dict[int, str]:
    return {pid: REFERENCE[kind] for kind, pids in kinds.items() for pid in pids}


def test_an_uninterrupted_sync_settles_each_kind_of_person(db, tmp_path, fake):
    """The reference the killed runs are compared with."""
    faults(fake)
    kinds = population(db, tmp_path, foyers=20, days=2)
    env = cli_env(db, fake)
    code, _out, err = _run(env, "ft", "sync", "--departement", "055", "--json")
    assert code == 0, err
    assert _outcomes(db) == _expected(kinds)
    _audit_verifies(env)


@pytest.mark.slow
@pytest.mark.parametrize("moment", MOMENTS)
def test_ft_sync_killed_early_midway_or_late_resumes_calling_nobody_settled_twice(db, tmp_path, fake, moment):
    kinds = population(db, tmp_path, foyers=30, days=2)
    persons = sum(len(v) for v in kinds.values())
    to_call = persons - len(kinds.get("no_nir", []))
    faults(fake, latency_ms=150)
    env = cli_env(db, fake, PASSERELLE_FT_MAX_CONCURRENCY="2")
    try:
        proc = passerelle("ft", "sync", "--departement", "055", "--json", env=env)
        if moment == "early":  # the run exists, nobody called yet or barely

            def progress() -> int:
                return _count(db, FtSyncRun)

            _kill_when(proc, progress, 1)
        else:
            target = max(1, int(to_call * MOMENTS[moment]))
            _kill_when(proc, lambda: _count(db, FtCall, FtCall.api == "rechercher-usager"), target)
        settled_before = _outcomes(db)
        assert len(settled_before) < persons, "the run had finished"
        faults(fake)
        code, out, err = _run(env, "ft", "sync", "--departement", "055", "--json")
    finally:
        faults(fake)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["definite"]
    with session_scope(db) as s:
        assert s.scalar(select(func.count()).select_from(FtSyncRun)) == 1, "the killed run was resumed"
        assert s.scalar(select(FtSyncRun.status)) == "done"
        searches = dict(
            s.execute(
                select(FtCall.person_id, func.count())
                .where(FtCall.api == "rechercher-usager")
                .group_by(FtCall.person_id)
            ).all()
        )
    twice = [pid for pid in settled_before if searches.get(pid, 0) > 1]
    assert not twice, f"{len(twice)} persons settled before the kill were searched again"
    assert _outcomes(db) == _expected(kinds), "not what an uninterrupted run gives"
    _audit_verifies(env)


def _decisions(db, settings, pids) -> None:
    with session_scope(settings, write=True) as s:
        for n, pid in enumerate(pids):
            p = s.get(Person, pid)
            body = {"type": "orientation", "organisme": ("DEPARTEMENT", "FRANCE_TRAVAIL")[n % 2],
                    "type_parcours": ("social", "professionnel")[n % 2], "date": p.first_received_on,
                    "external_id": f"o-{pid}"}  # fmt: skip
            record_event(s, settings, p, EventIn.model_validate(body), recorded_by="test")


@pytest.mark.slow
@pytest.mark.parametrize("moment", MOMENTS)
def test_ft_push_killed_early_midway_or_late_never_sends_a_decision_twice(db, tmp_path, fake, moment):
    faults(fake)
    kinds = population(db, tmp_path, foyers=30, days=2)
    chosen = kinds["certified"][:12]
    settings = ft_settings(db, fake, ft_orientation_push=True)
    _decisions(db, settings, chosen)
    fake_stats(fake, reset=True)
    env = cli_env(db, fake, PASSERELLE_FT_ORIENTATION_PUSH="true")
    faults(fake, latency_ms=150)
    try:
        proc = passerelle("ft", "push", "--json", env=env)
        if moment == "early":  # it claimed its first decision, maybe sent it
            target, where = 1, FtOutboxItem.status.in_(("sending", "sent"))
        else:
            target, where = max(1, int(len(chosen) * MOMENTS[moment])), FtOutboxItem.status == "sent"
        _kill_when(proc, lambda: _count(db, FtOutboxItem, where), target)
        assert _count(db, FtOutboxItem, FtOutboxItem.status == "sent") < len(chosen), "the push had finished"
        faults(fake)
        # a claimed decision stays in the killed process's hands until its time is up (sending_expires):
        # that time passes
        with session_scope(db, write=True) as s:
            s.execute(
                update(FtOutboxItem)
                .where(FtOutboxItem.status == "sending")
                .values(next_attempt_at=utcnow() - timedelta(hours=1))
            )
        code, _out, err = _run(env, "ft", "push", "--json")
    finally:
        faults(fake)
    assert code == 0, err
    assert fake_stats(fake)["orientations"] == len(chosen), "a decision reached France Travail twice, or never"
    with session_scope(db) as s:
        assert set(s.scalars(select(FtOutboxItem.status))) == {"sent"}
    assert _run(env, "ft", "push", "--json")[0] == 0 and fake_stats(fake)["orientations"] == len(chosen)
    _audit_verifies(env)


FAULTS = {
    "503": {"rate_503": 0.3},
    "500": {"rate_500": 0.3},
    "resets": {"rate_reset": 0.3},
    "429_retry_after": {"rate_429": 0.3, "retry_after": 1},
    "malformed": {"rate_malformed": 0.3},
}


@pytest.mark.slow
@pytest.mark.parametrize("fault", FAULTS)
def test_ft_sync_under_partner_faults_ends_bounded_and_the_next_run_settles_the_rest(db, tmp_path, fake, fault):
    kinds = population(db, tmp_path, foyers=15, days=2)
    persons = sum(len(v) for v in kinds.values())
    env = without_faketime(cli_env(db, fake, PASSERELLE_FT_MAX_CONCURRENCY="4", PASSERELLE_FT_MAX_ATTEMPTS="3",
                                   PASSERELLE_FT_CIRCUIT_FAILURES="100"))  # fmt: skip
    faults(fake, **FAULTS[fault])
    try:
        began = time.monotonic()
        code, out, err = _run(env, "ft", "sync", "--departement", "055", "--json")
        took = time.monotonic() - began
    finally:
        faults(fake)
    assert code in (0, 1), err[-2000:]  # per-person errors at most, never a crash (4)
    assert took < 60, took
    assert "Traceback" not in err
    summary = json.loads(out)
    assert sum(summary["outcomes"].values()) == persons
    code, out, err = _run(env, "ft", "sync", "--departement", "055", "--json")
    assert code == 0, err[-2000:]
    assert _outcomes(db) == _expected(kinds)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["503", "resets"])
def test_ft_sync_when_france_travail_stays_unavailable_exits_3_resumable(db, tmp_path, fake, fault):
    population(db, tmp_path, foyers=15, days=2)
    env = without_faketime(cli_env(db, fake, PASSERELLE_FT_MAX_CONCURRENCY="2", PASSERELLE_FT_MAX_ATTEMPTS="2",
                                   PASSERELLE_FT_CIRCUIT_COOLDOWN_SECONDS="0.1"))  # fmt: skip
    faults(fake, **{key: 1.0 for key in FAULTS[fault]})
    try:
        began = time.monotonic()
        code, _out, err = _run(env, "ft", "sync", "--departement", "055")
        took = time.monotonic() - began
    finally:
        faults(fake)
    assert code == 3 and "stayed unavailable" in err, err[-2000:]
    assert took < 60, took
    assert _count(db, FtSyncItem, FtSyncItem.outcome.notin_(("no_nir",))) == 0
    with session_scope(db) as s:
        assert s.scalar(select(FtSyncRun.status)) == "running"  # resumable
    code, _out, err = _run(env, "ft", "sync", "--departement", "055")
    assert code == 0, err[-2000:]
    with session_scope(db) as s:
        assert s.scalar(select(FtSyncRun.status)) == "done"


@pytest.mark.slow
def test_ft_sync_when_france_travail_is_silent_ends_within_its_deadlines(db, tmp_path, fake):
    population(db, tmp_path, foyers=10, days=2)
    env = without_faketime(cli_env(db, fake, PASSERELLE_FT_MAX_CONCURRENCY="4",
                                   PASSERELLE_FT_SYNC_PERSON_DEADLINE_SECONDS="2",
                                   PASSERELLE_FT_READ_TIMEOUT_SECONDS="1"))  # fmt: skip
    faults(fake, latency_ms=60_000)
    try:
        began = time.monotonic()
        code, _out, err = _run(env, "ft", "sync", "--departement", "055")  # no --budget: the nightly run
        took = time.monotonic() - began
    finally:
        faults(fake)
    assert code == 3 and "France Travail stayed unavailable" in err, err[-2000:]
    assert took < 40, f"{took:.1f} s against a silent France Travail"
    with session_scope(db) as s:
        assert s.scalar(select(FtSyncRun.status)) == "running"  # resumable
    code, _out, err = _run(env, "ft", "sync", "--departement", "055")
    assert code == 0, err[-2000:]
    with session_scope(db) as s:
        assert s.scalar(select(FtSyncRun.status).order_by(FtSyncRun.id.desc()).limit(1)) == "done"


@pytest.mark.slow
@pytest.mark.parametrize("fault", [*FAULTS, "down", "silent"])
def test_ft_push_under_partner_faults_never_sends_twice_and_retries_later(db, tmp_path, fake, fault):
    faults(fake)
    kinds = population(db, tmp_path, foyers=20, days=2)
    chosen = kinds["certified"][:10]
    settings = ft_settings(db, fake, ft_orientation_push=True)
    _decisions(db, settings, chosen)
    fake_stats(fake, reset=True)
    extra = {"PASSERELLE_FT_ORIENTATION_PUSH": "true", "PASSERELLE_FT_MAX_ATTEMPTS": "2",
             "PASSERELLE_FT_READ_TIMEOUT_SECONDS": "1", "PASSERELLE_FT_CIRCUIT_COOLDOWN_SECONDS": "0.1"}  # fmt: skip
    base = "http://127.0.0.1:9" if fault == "down" else fake
    env = without_faketime(cli_env(db, base, **extra))
    # the child runs on the real clock (without_faketime): decisions this test queued under a shifted clock
    # would be in its future, and nothing due; they are due whatever the clock
    with session_scope(db, write=True) as s:
        s.execute(update(FtOutboxItem).values(next_attempt_at=datetime(2000, 1, 1, tzinfo=UTC)))
    if fault == "silent":
        faults(fake, latency_ms=60_000)
    elif fault != "down":
        faults(fake, **FAULTS[fault])
    try:
        began = time.monotonic()
        code, _out, err = _run(env, "ft", "push", "--json")
        took = time.monotonic() - began
    finally:
        faults(fake)
    if fault in ("down", "silent"):  # France Travail never answered: said, exit 3 (it was 0 before issue #24)
        assert code == 3 and "France Travail stayed unavailable" in err, (code, err[-2000:])
        assert fault != "down" or "127.0.0.1:9" in err, err[-2000:]
    else:
        assert code in (0, 1), err[-2000:]  # never a crash (4), nor "unavailable" for a France Travail answering
    assert "Traceback" not in err, err[-2000:]
    assert took < 60, took
    # the retries wait (their next attempt later): that time passes, France Travail is back
    with session_scope(db, write=True) as s:
        s.execute(
            update(FtOutboxItem)
            .where(FtOutboxItem.status.in_(("pending", "sending")))
            .values(next_attempt_at=utcnow() - timedelta(hours=1))
        )
    env = cli_env(db, fake, **extra)
    code, _out, err = _run(env, "ft", "push", "--json")
    with session_scope(db) as s:
        rows = s.execute(select(FtOutboxItem.status, FtOutboxItem.attempts, FtOutboxItem.last_error)).all()
    assert code == 0, err[-2000:]
    assert fake_stats(fake)["orientations"] == len(chosen), ("a decision reached France Travail twice, or never",
                                                             rows)  # fmt: skip
    with session_scope(db) as s:
        assert set(s.scalars(select(FtOutboxItem.status))) == {"sent"}
