"""A database that fails under a command is the environment's fault, exit 3 with one line naming it, never
exit 4 "please report it" (issue #24 item 2): a lost PostgreSQL connection, a server shutting down, a full
disk, whichever command it happens in and whether SQLAlchemy or the driver raised it; the statement and
its parameters (personal data) never in the message. A bug stays exit 4."""

from __future__ import annotations

import base64
import resource
import secrets
import sqlite3
import time
from datetime import date

import psycopg
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from typer.testing import CliRunner

from app.audit.chain import seal
from app.clock import today
from app.db import get_engine, session_scope
from app.errors import ExitCode
from app.flux.generator import generate_single
from app.flux.loader import IngestOptions, ingest_file
from app.models import FluxFile, Person
from tests.support.cli import registered_command
from tests.support.fluxbuilder import NIR_A, foyer, person, write_flux
from tests.support.ftsupport import cli_env, passerelle

LOST = "server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally"

FAULTS = [
    OperationalError("SELECT secret_nir FROM p WHERE nir = %(n)s", {"n": "1840275"}, psycopg.OperationalError(LOST)),
    InterfaceError("COMMIT", None, psycopg.InterfaceError("the connection is closed")),
    OperationalError("INSERT INTO t VALUES (?)", ("Martin",), sqlite3.OperationalError("database or disk is full")),
    sqlite3.OperationalError("database or disk is full"),
    psycopg.OperationalError("terminating connection due to administrator command"),
]  # fmt: skip


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: type(f).__name__)
def test_a_failing_database_exits_3_in_one_line_without_the_statement(fault):
    def job() -> None:
        raise fault

    with registered_command("test-db-fault", job) as app:
        result = CliRunner().invoke(app, ["test-db-fault"], catch_exceptions=False)
    assert result.exit_code == ExitCode.ENVIRONMENT, result.output
    assert result.output.startswith("error: the database failed (") and result.output.count("\n") == 1
    assert "run the same command again" in result.output
    for secret in ("secret_nir", "1840275", "Martin", "INSERT", "SELECT"):
        assert secret not in result.output


def test_a_bug_is_still_a_bug():
    def job() -> None:
        raise IntegrityError("INSERT", None, sqlite3.IntegrityError("UNIQUE constraint failed"))

    with registered_command("test-db-bug", job) as app, pytest.raises(IntegrityError):
        CliRunner().invoke(app, ["test-db-bug"], catch_exceptions=False)


@pytest.mark.parametrize("room_kb", [256, 1024])  # the disk fills in a statement, in the bulk insert...
def test_a_full_sqlite_disk_during_an_ingestion_exits_3_and_changes_nothing(db, tmp_path, room_kb):
    if not db.is_sqlite:
        pytest.skip("a full disk under SQLite's files; PostgreSQL's disk is the server's")
    flux = generate_single(tmp_path / "stock.xml", foyers=4000, day=date(2024, 3, 1)).path
    path = db.sqlite_path
    with session_scope(db) as s:
        files_before = s.scalar(select(func.count()).select_from(FluxFile))
    get_engine(db).dispose()  # the WAL checkpointed: the files' sizes are what the child starts from
    # no free pages left by earlier tests (the database is emptied between them, not shrunk): the ingestion must
    # grow the file to write, whatever ran before (it once fitted in the free pages and exited 0)
    vacuum = sqlite3.connect(path, isolation_level=None)
    try:
        vacuum.execute("VACUUM")
        vacuum.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        vacuum.close()
    wal = path.parent / f"{path.name}-wal"
    room = max(path.stat().st_size, wal.stat().st_size if wal.exists() else 0)
    limit = room + room_kb * 1024  # a disk with that much room left past the largest file

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = passerelle(
        "flux", "ingest", str(flux), "--initial-stock", "--received-on", "2024-03-01",
        env=cli_env(db, "http://127.0.0.1:9"), preexec_fn=small_disk,
    )  # fmt: skip
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == ExitCode.ENVIRONMENT, err[-2000:]
    assert "the database failed" in err and "Traceback" not in err, err[-2000:]
    with session_scope(db) as s:
        assert s.scalar(select(func.count()).select_from(FluxFile)) == files_before  # nothing half-applied
    with get_engine(db).connect() as conn:
        assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"


def _killed_while_waiting(db, tmp_path, command: list[str], hold: str, env_extra: dict[str, str] | None = None):
    """Run `passerelle COMMAND` on PostgreSQL while this test holds a lock it needs (`hold`: a statement taking
    it), then kill its connection while it waits (what a PostgreSQL restart or a failover does): returns
    (exit code, stderr)."""
    from sqlalchemy import create_engine

    holder = create_engine(db.database_url)
    try:
        with holder.connect() as conn, conn.begin():
            conn.execute(text(hold))
            env = cli_env(db, "http://127.0.0.1:9") | (env_extra or {})
            proc = passerelle(*command, env=env)
            waiting = None
            for _ in range(1200):  # a minute at most (a loaded machine starts a process slowly)
                conn.execute(text("SELECT pg_stat_clear_snapshot()"))  # a transaction sees one snapshot otherwise
                waiting = conn.execute(  # the backend this test's lock holds back
                    text("SELECT pid FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))")
                ).scalar()
                if waiting or proc.poll() is not None:
                    break
                time.sleep(0.05)
            if not waiting:
                proc.kill()
                raise AssertionError(f"the job never waited on the lock: {proc.communicate()[1][-1000:]}")
            conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": waiting})
        _out, err = proc.communicate(timeout=120)
        return proc.returncode, err
    finally:
        holder.dispose()


def test_a_lost_postgresql_connection_exits_3_for_the_purge_and_the_key_rotation(db, tmp_path):
    if db.is_sqlite:
        pytest.skip("PostgreSQL's connections")
    seal(get_engine(db), db)  # the chain's row exists: the purge's seal waits for it
    code, err = _killed_while_waiting(db, tmp_path, ["purge"], "SELECT * FROM audit_chain FOR UPDATE")
    assert code == ExitCode.ENVIRONMENT and "the database failed" in err, err[-2000:]
    flux = write_flux(tmp_path, [foyer(person(NIR_A))])
    assert ingest_file(get_engine(db), db, flux, IngestOptions(received_on=today(db))).status == "applied"
    old = db.nir_encryption_keys.get_secret_value()
    new = f"k2:{base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()}"
    code, err = _killed_while_waiting(db, tmp_path, ["keys", "rotate", "nir"], "SELECT * FROM persons FOR UPDATE",
                                      {"PASSERELLE_NIR_ENCRYPTION_KEYS": f"{new},{old}"})  # fmt: skip
    assert code == ExitCode.ENVIRONMENT and "the database failed" in err, err[-2000:]
    with session_scope(db) as s:  # nothing half-done: the person still under the old key, readable
        assert s.scalar(select(func.count()).select_from(Person).where(Person.nir_encrypted.startswith("k1:"))) == 1
