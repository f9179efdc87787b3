"""Database engine and the one session scope of the service (SQLite embedded, PostgreSQL in production).

Who writes what (docs/decisions.md, "Many callers at once"): a transaction that will write the main
database claims its write lock when it begins (`claim_write`); readers never write it. The one write a read
implies, its access record, goes to the audit journal: on SQLite a second database file attached to every
connection as `audit` (so a reader never waits for the main file's writer, an ingestion), on PostgreSQL
the same database (row locks never conflict there).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from app.settings import Settings, get_settings

_engines: dict[str, Engine] = {}

AUDIT_SCHEMA = "audit"


def audit_path(database: str) -> str:
    """The audit journal's file beside a SQLite database file (`x.db` -> `x-audit.db`)."""
    if not database or database == ":memory:":
        return ":memory:"
    path = Path(database)
    return str(path.with_name(f"{path.stem}-audit{path.suffix or '.db'}"))


def _sqlite_setup(busy_ms: int, audit_file: str) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling defers BEGIN; we take control so that a whole flux file is
        # applied in one real transaction (SQLAlchemy docs, "Serializable isolation / Savepoints").
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"ATTACH DATABASE ? AS {AUDIT_SCHEMA}", (audit_file,))
        cursor.execute(f"PRAGMA {AUDIT_SCHEMA}.journal_mode=WAL")
        cursor.execute(f"PRAGMA {AUDIT_SCHEMA}.synchronous=NORMAL")
        cursor.close()

    return on_connect


def make_engine(url: str, settings: Settings | None = None, *, statement_timeout: bool = True) -> Engine:
    """`hide_parameters`: a database error's message never carries the values (names, NIR hashes...).

    `statement_timeout=False` for migrations and maintenance: no time limit on PostgreSQL statements.
    """
    settings = settings or get_settings()
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        busy = settings.sqlite_busy_timeout_seconds
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": busy}, hide_parameters=True)
        event.listen(engine, "connect", _sqlite_setup(busy * 1000, audit_path(parsed.database or "")))
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
        return engine
    options = []
    if statement_timeout and settings.database_statement_timeout_seconds:
        options.append(f"-c statement_timeout={settings.database_statement_timeout_seconds * 1000}")
    connect_args: dict[str, Any] = {"connect_timeout": settings.database_connect_timeout_seconds}
    if options:
        given = parsed.query.get("options")
        given_text = given if isinstance(given, str) else " ".join(given or ())
        connect_args["options"] = " ".join([given_text, *options]).strip()
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=10,
        pool_timeout=settings.database_pool_timeout_seconds,
        connect_args=connect_args,
        hide_parameters=True,
    )


def get_engine(settings: Settings | None = None) -> Engine:
    settings = settings or get_settings()
    engine = _engines.get(settings.database_url)
    if engine is None:
        engine = _engines[settings.database_url] = make_engine(settings.database_url, settings)
    return engine


def dispose_engines() -> None:
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()


def _write_access_records(session: Session) -> None:
    from app.services.persons import write_access_records

    write_access_records(session)


def session_factory(settings: Settings | None = None) -> sessionmaker[Session]:
    factory = sessionmaker(bind=get_engine(settings), expire_on_commit=False)
    # The access records a unit of work gathered are written last, just before it commits.
    event.listen(factory, "before_commit", _write_access_records)
    return factory


def claim_write(conn: Connection | Session) -> None:
    """Say at the start of a transaction that it will write the main database.

    SQLite: take the main file's write lock now (waiting up to the busy timeout), not halfway through a
    transaction that has already read, where WAL mode refuses the upgrade at once ("database is locked")
    if another writer committed meanwhile. `BEGIN IMMEDIATE` would do it but also locks every attached
    database, the audit journal included, which readers must always be able to write. A no-op write on
    the main file takes its lock only. PostgreSQL: nothing to do (row locks, taken in one order).
    """
    bind = conn.connection() if isinstance(conn, Session) else conn
    if bind.dialect.name == "sqlite":
        bind.exec_driver_sql("UPDATE main.departements SET code = code WHERE 0")


def unlimited_statements(conn: Connection) -> None:
    """Lift the request statement timeout for this transaction (an ingestion, a bulk refresh)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SET LOCAL statement_timeout = 0"))


@contextmanager
def session_scope(settings: Settings | None = None, *, write: bool = False) -> Iterator[Session]:
    """One unit of work: commit if the block succeeds, roll back otherwise. Services never commit.

    `write=True` when the block will write the main database (see `claim_write`)."""
    session = session_factory(settings)()
    try:
        if write:
            claim_write(session)
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
