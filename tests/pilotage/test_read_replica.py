"""Pilotage reads on a read replica (issue #27, item 6): a PostgreSQL primary and its streaming standby, started
for this module in a temporary directory (the machine's own server is left alone). The tables, the indicator
and the dashboard answer the same figures on the replica as on the primary for the same as_of; a replica that
has not replayed the primary's last writes, or that is down, leaves the primary to answer."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from app import migrate as migrations
from app.clock import today
from app.db import dispose_engines, get_engine, get_read_engine, on_replica, session_scope
from app.flux.generator import generate
from app.orientation.episodes import refresh_pending
from app.settings import ConfigurationError, Settings
from tests.support.database import make_settings
from tests.support.factories import ingest_generated
from tests.support.processes import stop

BIN = Path("/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres() -> dict[str, Any]:
    """PostgreSQL refuses to run as root: its programs run as the `postgres` user when the tests are root. On
    the real clock, like the machine's own server: a run dated by faketime (README) must not reach them (their
    statement timeouts are timers, which never fire under it)."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("FAKETIME")}
    return {"user": "postgres", "env": env} if os.geteuid() == 0 else {"env": env}


class Cluster:
    def __init__(self, data: Path, port: int, sockets: Path) -> None:
        self.data, self.port, self.sockets = data, port, sockets
        self.proc: subprocess.Popen[Any] | None = None
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"

    def start(self) -> None:
        log = open(self.data.parent / f"{self.data.name}.log", "ab")  # noqa: SIM115 - closed with the process
        command = [str(BIN / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.sockets)]
        self.proc = subprocess.Popen(
            [*command, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
            stdout=log,
            stderr=log,
            start_new_session=True,
            **_as_postgres(),
        )
        log.close()
        deadline = time.monotonic() + 30
        while True:
            probe = subprocess.run(
                [str(BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
                capture_output=True,
            )
            if probe.returncode == 0:
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.data.parent / f"{self.data.name}.log").read_text()[-2000:])
            time.sleep(0.1)

    def stop(self) -> None:
        """A fast shutdown (SIGINT: clients disconnected), then `stop`'s TERM and KILL if it lingers."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
            stop(self.proc, grace=10)
            self.proc = None


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[Cluster, Cluster]]:
    if not (BIN / "postgres").exists() or shutil.which("runuser") is None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL's programs are missing from {BIN}: the read replica cannot be tested")
        pytest.skip(f"PostgreSQL's programs are not in {BIN}")
    # pytest's own directories are private to root: the clusters live in one of their own, given to postgres
    base = Path(tempfile.mkdtemp(prefix="passerelle-replica-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    primary = Cluster(base / "primary", _free_port(), base)
    standby = Cluster(base / "standby", _free_port(), base)
    try:
        subprocess.run(
            [str(BIN / "initdb"), "-D", str(primary.data), "-A", "trust", "-U", "postgres", "--no-sync"],
            check=True,
            capture_output=True,
            **_as_postgres(),
        )
        primary.start()
        subprocess.run(
            [
                str(BIN / "pg_basebackup"),
                "-h",
                "127.0.0.1",
                "-p",
                str(primary.port),
                "-U",
                "postgres",
                "-D",
                str(standby.data),
                "-R",
                "-X",
                "stream",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            **_as_postgres(),
        )
        standby.start()
        yield primary, standby
    finally:
        dispose_engines()
        standby.stop()
        primary.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def populated(pair: tuple[Cluster, Cluster], tmp_path_factory: pytest.TempPathFactory, jwks_file: Path) -> Settings:
    primary, standby = pair
    data = tmp_path_factory.mktemp("data")
    settings = make_settings(primary.url, data, jwks_file, database_read_url=standby.url)
    migrations.upgrade(settings)
    out = tmp_path_factory.mktemp("gen")
    generate(out, 150, 40, today(settings) - timedelta(days=45), seed=27, departement="055")
    ingest_generated(settings, out, departement="055")
    refresh_pending(get_engine(settings))
    return settings


def _caught_up(settings: Settings) -> None:
    """Wait until the standby has replayed everything the primary wrote so far."""
    with create_engine(settings.database_url).connect() as p:
        target = p.execute(text("SELECT pg_current_wal_lsn()")).scalar_one()
    with create_engine(settings.database_read_url).connect() as r:
        for _ in range(300):
            if r.execute(text("SELECT pg_last_wal_replay_lsn() >= CAST(:t AS pg_lsn)"), {"t": str(target)}).scalar():
                return
            r.rollback()
            time.sleep(0.02)
    raise AssertionError("the standby did not catch up")


def where(settings: Settings, wait_ms: int = 200) -> bool:
    """Whether `on_replica` read on the standby (True) or the primary (False)."""
    with session_scope(settings) as session:
        return bool(
            on_replica(
                session,
                get_read_engine(settings),
                wait_ms,
                lambda conn: conn.execute(text("SELECT pg_is_in_recovery()")).scalar(),
            )
        )


def test_settings_refuse_a_replica_without_postgresql(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="PASSERELLE_DATABASE_READ_URL"):
        make_settings(f"sqlite:///{tmp_path / 'x.db'}", tmp_path, database_read_url="postgresql+psycopg://u@h:5432/d")
    with pytest.raises(ConfigurationError, match="PASSERELLE_DATABASE_READ_URL"):
        make_settings("postgresql+psycopg://u@h:5432/d", tmp_path, database_read_url="mysql://u@h/d")


def test_reads_go_to_the_standby_once_it_has_caught_up(populated: Settings) -> None:
    _caught_up(populated)
    assert where(populated) is True
    assert where(populated.model_copy(update={"database_read_url": ""})) is False


def test_tables_on_the_replica_equal_the_primarys(populated: Settings, make_token: Any) -> None:
    from app.main import create_app

    _caught_up(populated)
    token = make_token(roles=["pilotage:read"], departements=["055"])
    headers = {"Authorization": f"Bearer {token}"}
    day = today(populated)
    as_ofs = [day, day - timedelta(days=10)]
    paths = [
        f"/api/v1/pilotage/tables/{name}?periode={day.year}&as_of={a}"
        for name in ("nouveaux-entrants", "delais-orientation", "delai-legal", "contrats-engagement")
        for a in as_ofs
    ]
    paths += [f"/api/v1/pilotage/orientation?from={day - timedelta(days=60)}&to={day}&as_of={a}" for a in as_ofs]
    paths += [f"/api/v1/pilotage/orientation?from={day - timedelta(days=60)}&to={day}&format=csv"]
    answers = {}
    for read_url in (populated.database_read_url, ""):
        app = create_app(populated.model_copy(update={"database_read_url": read_url}))
        assert (app.state.read_engine is not None) is bool(read_url)
        with TestClient(app) as client:
            answers[read_url] = [client.get(p, headers=headers) for p in paths]
    for on_replica_answer, on_primary_answer in zip(answers[populated.database_read_url], answers[""], strict=True):
        assert on_replica_answer.status_code == on_primary_answer.status_code == 200
        assert on_replica_answer.content == on_primary_answer.content
    # the figures are real ones, not two empty answers
    assert answers[""][-3].json()["nouveaux_entrants"] > 0


def test_a_replica_behind_or_down_leaves_the_primary_to_answer(populated: Settings, pair: Any) -> None:
    standby = pair[1]
    _caught_up(populated)
    replica = create_engine(populated.database_read_url, isolation_level="AUTOCOMMIT")
    with replica.connect() as r:
        r.execute(text("SELECT pg_wal_replay_pause()"))
    try:
        with session_scope(populated, write=True) as session:  # a write the paused standby cannot replay
            session.execute(text("UPDATE departements SET code = code"))
        started = time.monotonic()
        assert where(populated, wait_ms=100) is False
        assert time.monotonic() - started < 5
    finally:
        with replica.connect() as r:
            r.execute(text("SELECT pg_wal_replay_resume()"))
        replica.dispose()
    _caught_up(populated)
    assert where(populated, wait_ms=2000) is True
    standby.stop()
    try:
        dispose_engines()
        assert where(populated) is False  # unreachable: the primary answers, nothing fails
    finally:
        standby.start()
        dispose_engines()
    _caught_up(populated)
    assert where(populated) is True
