"""Database engine and the one session scope of the service (SQLite embedded, PostgreSQL in production).

Who writes what (docs/decisions.md, "Many callers at once"): a transaction that will write the main
database claims its write lock when it begins (`claim_write`); readers never write it. The one write a read
implies, its access record, goes to the audit journal: on SQLite a second database file attached to every
connection as `audit` (so a reader never waits for the main file's writer, an ingestion), on PostgreSQL
the same database (row locks never conflict there).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import structlog
from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    String,
    any_,
    bindparam,
    create_engine,
    event,
    false,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from app.kit.files import private_dir, private_file
from app.settings import Settings, get_settings

_engines: dict[str, Engine] = {}
REPLICA_RETRY_SECONDS = 10.0  # a read replica that could not be reached is left alone this long
_replica_down_until: dict[str, float] = {}  # its URL: until when (time.monotonic())
QUERY_CANCELED = "57014"  # a statement timeout (a conflict with recovery is 40001: the primary then answers)
log = structlog.get_logger(__name__)
T = TypeVar("T")

AUDIT_SCHEMA = "audit"
AUDIT_TABLES = ("access_records", "audit_chain", "audit_leaves", "queued_events")  # in the audit journal on SQLite
# the settings each engine was made with: the audit events' proofs are made with their keys (app.audit.proof)
_engine_settings: weakref.WeakKeyDictionary[Engine, Settings] = weakref.WeakKeyDictionary()


def settings_of(engine: Engine) -> Settings:
    """The settings `engine` was made with by `make_engine` (else the process's own)."""
    return _engine_settings.get(engine) or get_settings()


def audit_path(database: str) -> str:
    """The audit journal's file beside a SQLite database file (`x.db` -> `x-audit.db`)."""
    if not database or database == ":memory:":
        return ":memory:"
    path = Path(database)
    return str(path.with_name(f"{path.stem}-audit{path.suffix or '.db'}"))


def _sqlite_setup(busy_ms: int, audit_file: str, create_audit: bool) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # A missing journal is never recreated but by the migrations or a first setup (SQLite would create an
        # empty file): in memory instead, without its tables, and `audit_journal_problem` says so.
        attached = audit_file if create_audit or Path(audit_file).exists() or audit_file == ":memory:" else ":memory:"
        # pysqlite's own transaction handling defers BEGIN; we take control so that a whole flux file is
        # applied in one real transaction (SQLAlchemy docs, "Serializable isolation / Savepoints").
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"ATTACH DATABASE ? AS {AUDIT_SCHEMA}", (attached,))
        cursor.execute(f"PRAGMA {AUDIT_SCHEMA}.journal_mode=WAL")
        cursor.execute(f"PRAGMA {AUDIT_SCHEMA}.synchronous=NORMAL")
        cursor.close()

    return on_connect


def make_engine(
    url: str,
    settings: Settings | None = None,
    *,
    statement_timeout: bool = True,
    pooled: bool = True,
    create_audit_journal: bool = False,
) -> Engine:
    """`hide_parameters`: a database error's message never carries the values (names, NIR hashes...).

    `statement_timeout=False` for migrations and maintenance: no time limit on PostgreSQL statements.
    `create_audit_journal` (the migrations): SQLite's audit journal is created if missing; otherwise only
    with a new database (a first setup), never beside an existing one (`audit_journal_problem`).
    """
    settings = settings or get_settings()
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            # The database and its audit journal hold personal data: created mode 600 (SQLite gives its
            # -wal and -shm files the database's own mode).
            database = Path(parsed.database)
            create_audit_journal = create_audit_journal or not database.exists()
            if not database.parent.exists():
                private_dir(database.parent)
            private_file(database)
            if create_audit_journal:
                private_file(Path(audit_path(parsed.database)))
        busy = settings.sqlite_busy_timeout_seconds
        # SQLite connections are cheap: room for a request that also applies a file (two connections). An
        # in-memory database has one connection per thread (SingletonThreadPool): nothing to size.
        in_memory = not parsed.database or parsed.database == ":memory:"
        pool = {} if in_memory else _pool_args(settings, pooled, spare=5)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": busy}, hide_parameters=True, **pool
        )
        audit_file = audit_path(parsed.database or "")
        event.listen(engine, "connect", _sqlite_setup(busy * 1000, audit_file, create_audit_journal))
        with _writer_locks_guard:
            _writer_locks.setdefault(str(engine.url), (threading.Lock(), busy))
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
        event.listen(engine, "commit", lambda conn: _release_held_lock(conn.info))
        event.listen(engine, "rollback", lambda conn: _release_held_lock(conn.info))
        # a connection returned to the pool never keeps the lock (an invalidated or abandoned transaction)
        event.listen(engine, "checkin", lambda _dbapi_conn, record: _release_held_lock(record.info))
        _engine_settings[engine] = settings
        return engine
    options = []
    if statement_timeout and settings.database_statement_timeout_seconds:
        options.append(f"-c statement_timeout={settings.database_statement_timeout_seconds * 1000}")
    connect_args: dict[str, Any] = {"connect_timeout": settings.database_connect_timeout_seconds}
    if options:
        given = parsed.query.get("options")
        given_text = given if isinstance(given, str) else " ".join(given or ())
        connect_args["options"] = " ".join([given_text, *options]).strip()
    pool = _pool_args(settings, pooled, spare=2)
    engine = create_engine(url, pool_pre_ping=pooled, connect_args=connect_args, hide_parameters=True, **pool)
    _engine_settings[engine] = settings
    return engine


def _pool_args(settings: Settings, pooled: bool, spare: int) -> dict[str, Any]:
    """A request holds its connection from authentication to its answer: the pool has one for each request
    admitted at once (`max_concurrent_requests`, `max_anonymous_requests`, `max_partner_requests`) plus
    `spare`, and overflow for the few that take a second.
    Unpooled: a connection of its own each time."""
    if not pooled:
        return {"poolclass": NullPool}
    admitted = settings.max_concurrent_requests + settings.max_anonymous_requests + settings.max_partner_requests
    return {
        "pool_size": admitted + spare,
        "max_overflow": admitted,
        "pool_timeout": settings.database_pool_timeout_seconds,
    }


def audit_journal_problem(engine: Engine) -> str | None:
    """SQLite: why the audit journal cannot be used, naming its file (None when it can, and on PostgreSQL).
    Its file missing, or present without its tables (created empty): every read is then refused, since a
    read is recorded there. Restore it from its backup, then restart the service (docs/operations.md)."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database or ""
    journal = audit_path(database)
    if journal != ":memory:" and not Path(journal).exists():
        return f"the audit journal {journal} is missing"
    with engine.connect() as conn:
        found = conn.exec_driver_sql(
            f"SELECT count(*) FROM {AUDIT_SCHEMA}.sqlite_master WHERE type = 'table' AND name IN "
            + "("
            + ", ".join(f"'{t}'" for t in AUDIT_TABLES)
            + ")"
        ).scalar()
    if found != len(AUDIT_TABLES):
        return f"the audit journal {journal} has no audit tables (recreated empty, or missing when the service started)"
    return None


def get_engine(settings: Settings | None = None) -> Engine:
    settings = settings or get_settings()
    engine = _engines.get(settings.database_url)
    if engine is None:
        engine = _engines[settings.database_url] = make_engine(settings.database_url, settings)
    return engine


def get_unpooled_engine(settings: Settings | None = None) -> Engine:
    """A connection of its own each time (rare, short side transactions that must not take a second
    connection from the pool their caller already draws on)."""
    settings = settings or get_settings()
    key = "unpooled:" + settings.database_url
    engine = _engines.get(key)
    if engine is None:
        engine = _engines[key] = make_engine(settings.database_url, settings, pooled=False)
    return engine


def dispose_engines() -> None:
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()
    _factories.clear()
    _replica_down_until.clear()  # new engines: a replica is tried again at once


# Run on every session just before it commits, in the order registered: a domain registers its own (the
# audit of reads writes the access records a unit of work gathered), so this module imports no domain.
_before_commit_hooks: list[Callable[[Session], None]] = []


def on_before_commit(hook: Callable[[Session], None]) -> None:
    """Register `hook(session)` to run just before every session of `session_factory` commits (once)."""
    if hook not in _before_commit_hooks:
        _before_commit_hooks.append(hook)


def _before_commit(session: Session) -> None:
    for hook in _before_commit_hooks:
        hook(session)


_factories: dict[str, sessionmaker[Session]] = {}


def session_factory(settings: Settings | None = None) -> sessionmaker[Session]:
    settings = settings or get_settings()
    factory = _factories.get(settings.database_url)
    if factory is None:
        factory = _factories[settings.database_url] = sessionmaker(bind=get_engine(settings), expire_on_commit=False)
        # The access records a unit of work gathered are written last, just before it commits.
        event.listen(factory, "before_commit", _before_commit)
    return factory


_HOLDS_WRITER_LOCK = "holds_process_writer_lock"
# per SQLite database: this process's writer lock and how long a writer waits (the busy timeout)
_writer_locks: dict[str, tuple[threading.Lock, int]] = {}
_writer_locks_guard = threading.Lock()


def _release_held_lock(info: dict[Any, Any]) -> None:
    """Release this process's writer lock if the connection (its pool record's `info`) holds it, and the
    long writer's marker (`claim_long_write`)."""
    lock = info.pop(_HOLDS_WRITER_LOCK, None)
    if lock is not None:
        lock.release()
    marker = info.pop(_HOLDS_LONG_WRITE, None)
    if marker is not None:
        os.close(marker)  # closing releases its flock


_HOLDS_LONG_WRITE = "holds_long_write_marker"


def long_write_marker(database: str) -> Path | None:
    """`<file>.ingesting` beside a SQLite database: flocked by a long writer (an ingestion) for as long as
    its transaction lasts. None for an in-memory database."""
    if not database or database == ":memory:":
        return None
    path = Path(database)
    return path.with_name(f"{path.name}.ingesting")


def claim_long_write(conn: Connection) -> None:
    """`claim_write` for a transaction that will hold SQLite's writer for long (a whole flux file): it first
    takes an exclusive flock on `long_write_marker`, released at its commit or rollback, so that a short
    writer (an event post) can tell at once that waiting would mean waiting for the file
    (`long_write_running`) and keep its event aside instead (app.orientation.aside). PostgreSQL: as
    `claim_write`."""
    marker = long_write_marker(conn.engine.url.database or "") if conn.dialect.name == "sqlite" else None
    if marker is not None and _HOLDS_LONG_WRITE not in conn.info:
        fd = os.open(marker, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        conn.info[_HOLDS_LONG_WRITE] = fd
    claim_write(conn)


def long_write_running(engine: Engine) -> bool:
    """SQLite: whether a long writer (`claim_long_write`, an ingestion of any process) holds the database's
    writer now; answered at once, without waiting. PostgreSQL: never (writers do not exclude each other)."""
    if engine.dialect.name != "sqlite":
        return False
    marker = long_write_marker(engine.url.database or "")
    return marker is not None and _flock_held(marker, os.O_RDONLY, fcntl.LOCK_SH)


class LongWriteRunning(Exception):
    """`claim_write_unless`: a long writer holds the database; the caller's transaction was rolled back."""


def claim_write_unless(session: Session, busy: Callable[[], bool], step_seconds: float = 0.1) -> None:
    """`claim_write` for a short writer that has somewhere else to go while a long writer holds SQLite's
    writer: it waits in steps of `step_seconds`, and between them asks `busy()`; once that says yes, its
    transaction is rolled back and `LongWriteRunning` raised (the caller keeps its work aside). Closes the
    window between a look at the marker and the claim, where an ingestion may have begun. Beyond the busy
    timeout, as `claim_write`. PostgreSQL: as `claim_write`."""
    bind = session.connection()
    if bind.dialect.name != "sqlite" or _HOLDS_WRITER_LOCK in bind.info:
        return
    lock, busy_seconds = _writer_locks[str(bind.engine.url)]
    deadline = time.monotonic() + busy_seconds
    while True:
        if busy():
            session.rollback()
            raise LongWriteRunning()
        if lock.acquire(timeout=step_seconds):
            bind.info[_HOLDS_WRITER_LOCK] = lock
            # the short wait on this very connection, put back before it can return to the pool (a reader
            # drawing it later would give up its access record after 0.1 s)
            raw = bind.connection.dbapi_connection
            assert raw is not None
            raw.execute(f"PRAGMA busy_timeout={int(step_seconds * 1000)}")
            try:
                bind.exec_driver_sql("UPDATE main.departements SET code = code WHERE 0")
                claimed = True
            except OperationalError:
                claimed = False
            finally:
                raw.execute(f"PRAGMA busy_timeout={busy_seconds * 1000}")
            if claimed:
                return
            session.rollback()  # releases the process's lock; the next try begins a new transaction
            bind = session.connection()
        if time.monotonic() > deadline:
            raise OperationalError("claim_write", {}, TimeoutError("database is locked"))


def claim_write(conn: Connection | Session) -> None:
    """Say at the start of a transaction that it will write the main database.

    SQLite: take the main file's write lock now (waiting up to the busy timeout), not halfway through a
    transaction that has already read, where WAL mode refuses the upgrade at once ("database is locked")
    if another writer committed meanwhile. `BEGIN IMMEDIATE` would do it but also locks every attached
    database, the audit journal included, which readers must always be able to write. A no-op write on
    the main file takes its lock only. The writers of one process first queue on a lock of their own,
    released at commit or rollback: SQLite's busy handler sleeps with a growing back-off (up to 100 ms a
    try), so under contention its waiters slept while the file was free (event posts at p95 2.4 s, bench
    run of 2026-11-25); between processes (an ingestion from cron) the busy timeout still decides.
    PostgreSQL: nothing to do (row locks, taken in one order).
    """
    bind = conn.connection() if isinstance(conn, Session) else conn
    if bind.dialect.name != "sqlite" or _HOLDS_WRITER_LOCK in bind.info:
        return  # PostgreSQL; or this transaction has claimed already (the lock goes at its commit or rollback)
    lock, busy_seconds = _writer_locks[str(bind.engine.url)]
    if not lock.acquire(timeout=busy_seconds):
        raise OperationalError("claim_write", {}, TimeoutError("database is locked (writers of this process)"))
    bind.info[_HOLDS_WRITER_LOCK] = lock
    bind.exec_driver_sql("UPDATE main.departements SET code = code WHERE 0")


# PostgreSQL advisory locks of the ingestions (app.flux.bulk.lock_departement), transaction-scoped, two-key
# form: this namespace, a stable number of the département (`departement_lock_key`). A file holds its
# département's lock exclusively for its whole transaction: the files of one département are applied one at a
# time, those of different départements side by side (new persons' ids come from a sequence, never from
# `max(id)`: migration 0030). No cycle of waits: a transaction takes at most one of these locks (an ingestion or
# a split its file's département, exclusively and before it writes; an event or a CSV import its own
# département, shared), and an ingestion, once it holds its lock, waits for no row another writer may hold
# (it inserts its own rows and updates only its département's persons and keys; episodes are refreshed after
# its commit, app.orientation.episodes).
INGESTION_LOCK_NS = 0x5A55E11E


def departement_lock_key(departement: str) -> int:
    """A département's key in `INGESTION_LOCK_NS`: its code's bytes as a number ("093", "02A", "974": at most
    three ASCII characters, so always within PostgreSQL's int4 and never two codes on one key)."""
    return int.from_bytes(departement.encode("ascii"), "big")


def wait_for_ingestion(conn: Connection, departement: str) -> bool:
    """Before deciding that no file has brought a person of this département yet (an event then waits for
    them): let an ingestion of the département in progress commit first. PostgreSQL: a shared hold of the
    département's ingestion lock until this transaction ends (so an ingestion of it starting meanwhile waits
    for it, and its re-matching after its commit sees what this transaction kept aside); the files of other
    départements are not waited for (their persons are never this département's). SQLite: the write claim
    already serialises writers. Returns whether an ingestion may have committed meanwhile (then look again)."""
    if conn.dialect.name != "postgresql":
        return False
    conn.execute(
        text("SELECT pg_advisory_xact_lock_shared(:ns, :k)"),
        {"ns": INGESTION_LOCK_NS, "k": departement_lock_key(departement)},
    )
    return True


def one_of(conn: Connection, column: Any, values: Sequence[Any]) -> Any:
    """`column IN values` for thousands of values, as one parameter: on PostgreSQL `= ANY(array)` (the
    planner keeps the index), on SQLite a JSON array read by `json_each`. Rendering and sending thousands
    of placeholders cost more than the queries themselves (ingestion and episode refresh, measured)."""
    if not values:
        return false()  # no value: nothing matches (and no array whose item type must be guessed)
    if conn.dialect.name == "postgresql":
        item = BigInteger() if isinstance(values[0], int) else String()
        return column == any_(bindparam(None, list(values), type_=ARRAY(item)))
    rows = func.json_each(bindparam(None, json.dumps(list(values)))).table_valued("value")
    return column.in_(select(rows.c.value))


def one_of_param(dialect: str, column: Any, name: str) -> Any:
    """`one_of` with a named parameter, for a statement built once (issue #27); its value is
    `one_of_value(dialect, values)`. `column` holds integers (ids). No value: use no such statement."""
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=ARRAY(BigInteger())))
    rows = func.json_each(bindparam(name, type_=String())).table_valued("value")
    return column.in_(select(rows.c.value))


def one_of_value(dialect: str, values: Sequence[int]) -> Any:
    """The value of a `one_of_param` parameter."""
    return list(values) if dialect == "postgresql" else json.dumps(list(values))


def unlimited_statements(conn: Connection) -> None:
    """Lift the request statement timeout for this transaction (an ingestion, a bulk refresh)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SET LOCAL statement_timeout = 0"))


@contextmanager
def write_transaction(session: Session, unless: Callable[[], bool] | None = None) -> Iterator[Session]:
    """The writing part of a request, begun and committed inside one call of the handler.

    FastAPI runs each synchronous dependency, the handler and the session's closing in separate calls to
    its thread pool, and a thread is released between them: a write lock held across two calls could wait
    for a free thread while every thread waits for that lock (a deadlock seen under load). Whatever the
    session read before (authentication) is ended first: it wrote nothing, and on SQLite the write claim
    must open its transaction. Committed at the end of the block, before the handler builds its answer.
    `unless`: give up (`LongWriteRunning`) once it says a long writer holds SQLite's (`claim_write_unless`).
    """
    session.commit()
    if unless is None:
        claim_write(session)
    else:
        claim_write_unless(session, unless)
    with _committed(session):
        yield session


@contextmanager
def _committed(session: Session) -> Iterator[Session]:
    """Commit if the block succeeds, roll back otherwise (and re-raise)."""
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit if the block succeeds, roll back otherwise. Services never commit."""
    session = factory()
    try:
        with _committed(session):
            yield session
    finally:
        session.close()


@contextmanager
def session_scope(settings: Settings | None = None, *, write: bool = False) -> Iterator[Session]:
    """A unit of work outside a request (CLI, jobs). `write=True` when the block will write the main
    database (see `claim_write`)."""
    with unit_of_work(session_factory(settings)) as session:
        if write:
            claim_write(session)
        yield session


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


# -- a read replica for the pilotage reads (issue #27, PASSERELLE_DATABASE_READ_URL) --------------------------


def get_read_engine(settings: Settings | None = None) -> Engine | None:
    """The replica's engine, or None when no read URL is set."""
    settings = settings or get_settings()
    if not settings.database_read_url:
        return None
    key = f"read:{settings.database_read_url}"
    engine = _engines.get(key)
    if engine is None:
        engine = _engines[key] = make_engine(settings.database_read_url, settings)
    return engine


def on_replica(session: Session, replica: Engine | None, max_wait_ms: int, work: Callable[[Connection], T]) -> T:
    """`work(conn)` on the replica once it has replayed everything the primary had written when this call
    began (its WAL position, read in the request's own transaction), so that the figures are the ones the
    primary would give now, whatever the as_of. Otherwise, on the primary: no replica set, the replica still
    behind after `max_wait_ms`, unreachable, not a standby (promoted: it no longer follows the primary), or
    a query of `work` cancelled there (a conflict with recovery). A pure read: run twice at worst. A replica that
    could not be reached is left alone `REPLICA_RETRY_SECONDS`; a query cancelled by its statement timeout is
    raised, not run again on the primary."""
    primary = session.connection()
    if replica is None or time.monotonic() < _replica_down_until.get(str(replica.url), 0.0):
        return work(primary)
    target = primary.execute(text("SELECT pg_current_wal_lsn()")).scalar_one()
    reached = False
    try:
        with replica.connect() as conn:
            reached = True
            if _replayed(conn, str(target), max_wait_ms):
                return work(conn)
    except (OperationalError, DBAPIError) as exc:  # never the values: the engines hide parameters
        log.warning("read_replica_failed", error=type(exc.orig).__name__ if exc.orig else type(exc).__name__)
        if getattr(exc.orig, "sqlstate", None) == QUERY_CANCELED:
            raise  # its statement timeout: as slow on the primary, which is not asked to do it again
        if not reached:  # unreachable: its connect timeout is not paid again by every request for a while
            _replica_down_until[str(replica.url)] = time.monotonic() + REPLICA_RETRY_SECONDS
    return work(primary)


def _replayed(conn: Connection, target: str, max_wait_ms: int) -> bool:
    deadline = time.monotonic() + max_wait_ms / 1000
    while True:
        standby, caught_up = conn.execute(
            text("SELECT pg_is_in_recovery(), coalesce(pg_last_wal_replay_lsn() >= CAST(:t AS pg_lsn), false)"),
            {"t": target},
        ).one()
        if not standby:
            log.warning("read_replica_not_standby")
            return False
        if caught_up:
            return True
        if time.monotonic() >= deadline:
            log.info("read_replica_behind", max_wait_ms=max_wait_ms)
            return False
        conn.rollback()  # a fresh look at the replay position
        time.sleep(0.01)


# -- a SQLite database in use by a server --------------------------------------------------------------------
# `passerelle serve` on a SQLite database holds a shared flock on `<file>.serving` for as long as it runs (the
# kernel releases it when the process ends, however it ends); whoever would delete or replace the file (the
# demo) first tries an exclusive one, and refuses when it cannot have it. A separate file: flock and SQLite's
# own POSIX locks never meet.
_serving_locks: list[int] = []


def serving_lock_path(database: Path) -> Path:
    return database.with_name(f"{database.name}.serving")


def hold_serving_lock(database: Path) -> None:
    """Mark the SQLite database as served by this process until it ends."""
    fd = os.open(serving_lock_path(database), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    _serving_locks.append(fd)


def database_in_use(database: Path) -> bool:
    """Whether a server (`hold_serving_lock`) uses the SQLite database now."""
    return _flock_held(serving_lock_path(database), os.O_RDWR, fcntl.LOCK_EX)


def _flock_held(path: Path, mode: int, lock: int) -> bool:
    """Whether another process holds a flock on `path` that excludes `lock` (asked without waiting); a
    missing file: nobody. Closing our descriptor releases our own lock, if we had it."""
    try:
        fd = os.open(path, mode)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, lock | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
