"""`passerelle export weekly` under faults (issue #24), run as a separate process on SQLite and PostgreSQL
against a real SMTP sink: killed (kill -9) early, midway and late, the next run sends the week's e-mail once
(at most the very same message again: same Message-ID, same links), the final tables are an uninterrupted
run's, the audit chain verifies, no process is left behind. The mail server down (closed port), refusing
(550) or silent (it takes the connection and never answers, bounded by PASSERELLE_SMTP_TIMEOUT_SECONDS):
exit 3, nothing half-published, the week retried by the next default run."""

from __future__ import annotations

import asyncio
import email
import os
import shutil
import signal
import threading
import time
from email import policy

import pytest
from sqlalchemy import func, select

from app.db import session_scope
from app.models import Export, ExportLink, ExportMail, JobLease
from tests.support.blackhole import BlackHole
from tests.support.factories import weekly_departement
from tests.support.ftsupport import cli_env, passerelle
from tests.support.processes import nothing_left
from tests.support.smtp import links


@pytest.fixture(autouse=True)
def no_earlier_files(db):
    """The data directory outlives a test (the database is emptied): the files earlier tests built go."""
    shutil.rmtree(db.data_dir / "exports", ignore_errors=True)


@pytest.fixture
def silent():
    with BlackHole(backlog=8) as server:
        yield server


def _env(db, port: int, **extra: str) -> dict[str, str]:
    return cli_env(db, "http://127.0.0.1:9", PASSERELLE_SMTP_HOST="127.0.0.1", PASSERELLE_SMTP_PORT=str(port),
                   PASSERELLE_SMTP_TLS="none", PASSERELLE_MAIL_FROM="passerelle@departement.test",
                   PASSERELLE_EXPORT_RECIPIENTS="agent.ft@francetravail.test",
                   PASSERELLE_PUBLIC_URL="https://passerelle.departement.test", **extra)  # fmt: skip


def _run(env, *args, timeout=120):
    proc = passerelle(*args, env=env)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _weekly(env, timeout=120):
    return _run(env, "export", "weekly", "--departement", "055", timeout=timeout)


def _count(db, model, *where) -> int:
    with session_scope(db) as s:
        return s.scalar(select(func.count()).select_from(model).where(*where)) or 0


def _published_once(db, sink, week) -> None:
    """The week published: one e-mail `sent`, the sink given one message (or the very same one again), two
    live links, both files published, nothing else left over."""
    messages = [email.message_from_bytes(m, policy=policy.default) for m in sink.messages]
    assert messages, "no e-mail went out"
    assert len({m["Message-ID"] for m in messages}) == 1, "a second e-mail with new links went out"
    assert len({tuple(sorted(links(m).items())) for m in sink.messages}) == 1
    with session_scope(db) as s:
        mails = s.execute(select(ExportMail.status, ExportMail.message_id)).all()
        exports = s.execute(select(Export.kind, Export.published_at, Export.path)).all()
        live = s.scalar(select(func.count()).select_from(ExportLink).where(ExportLink.revoked_at.is_(None)))
        assert s.scalar(select(func.count()).select_from(JobLease)) == 0
    sent = [m for m in mails if m.status == "sent"]
    assert len(sent) == 1 and sent[0].message_id == messages[0]["Message-ID"], mails
    assert sorted(e.kind for e in exports) == ["flux", "pilotage"] and all(e.published_at for e in exports)
    assert live == 2
    directory = db.data_dir / "exports" / "055" / week.label
    assert sorted(p.name for p in directory.iterdir() if p.name != "manifest.json") == sorted(
        os.path.basename(e.path) for e in exports
    ), "a file built by the killed run was left beside the published ones"


def _audit_verifies(env) -> None:
    code, out, err = _run(env, "audit", "verify")
    assert code == 0, (out, err)


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["early", "midway", "late"])
def test_export_weekly_killed_early_midway_or_late_sends_the_week_once(db, xsettings, smtp, silent, tmp_path, moment):
    """early: it holds the lease, building; midway: the e-mail recorded, the mail server not answering yet;
    late: the mail server took the e-mail, its answer not given yet."""
    sink, port = smtp
    week = weekly_departement(xsettings, tmp_path, foyers=60)
    took = threading.Event()
    if moment == "late":
        real = sink.handle_DATA

        async def holding(server, session, envelope):
            sink.messages.append(envelope.content)
            took.set()
            for _ in range(300):
                await asyncio.sleep(0.1)  # until the client is gone
            return "451 too late"

        sink.handle_DATA = holding
    env = _env(db, silent.port if moment == "midway" else port)
    proc = passerelle("export", "weekly", "--departement", "055", env=env)
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, f"it ended before the kill: {proc.communicate()}"
        assert time.monotonic() < deadline, "never reached the moment"
        if moment == "early" and _count(db, JobLease):
            break
        if moment == "midway" and silent.accepted and _count(db, ExportMail, ExportMail.status == "sending"):
            break
        if moment == "late" and took.is_set():
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    nothing_left(proc.pid)
    if moment == "late":
        sink.handle_DATA = real
    code, _out, err = _weekly(_env(db, port))
    assert code == 0, err[-2000:]
    if moment != "early":
        assert "sent again" in err or "the same e-mail again" in _out, (_out, err)
    _published_once(db, sink, week)
    before = len(sink.messages)
    code, out, err = _weekly(_env(db, port))  # the next night: nothing more
    assert code == 0 and len(sink.messages) == before, (out, err)
    _audit_verifies(_env(db, port))


@pytest.mark.parametrize("fault", ["down", "refusing", "silent"])
def test_export_weekly_with_the_mail_server_failing_exits_3_and_the_next_run_publishes(
    db, xsettings, smtp, silent, tmp_path, fault
):
    sink, port = smtp
    week = weekly_departement(xsettings, tmp_path, foyers=40)
    failing = {"down": 9, "refusing": port, "silent": silent.port}[fault]
    sink.refuse = fault == "refusing"
    began = time.monotonic()
    code, _out, err = _weekly(_env(db, failing, PASSERELLE_SMTP_TIMEOUT_SECONDS="2"))
    took = time.monotonic() - began
    assert code == 3, err[-2000:]
    assert "the next run retries this week" in err and "Traceback" not in err, err[-2000:]
    assert took < 30, f"{took:.1f} s against a mail server that {fault}"
    assert not sink.messages
    with session_scope(db) as s:  # nothing half-published
        assert s.scalar(select(func.count()).select_from(ExportLink).where(ExportLink.revoked_at.is_(None))) == 0
        assert set(s.scalars(select(ExportMail.status))) == {"failed"}
        assert all(p is None for p in s.scalars(select(Export.published_at)))
        assert s.scalar(select(func.count()).select_from(JobLease)) == 0
    sink.refuse = False
    code, _out, err = _weekly(_env(db, port))  # the next default run
    assert code == 0, err[-2000:]
    _published_once(db, sink, week)
    _audit_verifies(_env(db, port))
