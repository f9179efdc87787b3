"""The tables an ingestion writes and how it writes them: bulk inserts per backend (COPY on PostgreSQL,
executemany on SQLite), the one-ingestion-at-a-time lock, the columns of the rows it builds."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, func, select, text
from sqlalchemy.exc import DBAPIError

from app.db import INGESTION_LOCK_ID, claim_long_write, unlimited_statements
from app.models import (
    AmbiguousKey,
    Departement,
    EpisodeQueue,
    FluxFile,
    FluxObservation,
    FoyerEvent,
    IdentityMatch,
    InstructionRecord,
    Person,
    PersonKey,
    PersonState,
)

T_FILES = cast(Table, FluxFile.__table__)
T_OBSERVATIONS = cast(Table, FluxObservation.__table__)
T_EVENTS = cast(Table, FoyerEvent.__table__)
T_KEYS = cast(Table, PersonKey.__table__)
T_STATES = cast(Table, PersonState.__table__)
T_PERSONS = cast(Table, Person.__table__)
T_DEPARTEMENTS = cast(Table, Departement.__table__)
T_QUEUE = cast(Table, EpisodeQueue.__table__)
T_AMBIGUOUS = cast(Table, AmbiguousKey.__table__)
T_INSTRUCTION = cast(Table, InstructionRecord.__table__)
T_IDENTITY_MATCHES = cast(Table, IdentityMatch.__table__)

_INGEST_LOCK_ID = INGESTION_LOCK_ID  # PostgreSQL advisory lock: one ingestion at a time


def sqlite_datetime(value: datetime) -> str:
    # The text form SQLAlchemy's SQLite DateTime type writes and reads back.
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


# Raw executemany on SQLite: adapt dates the way SQLAlchemy stores them (ISO text). These adapters only
# see values we pass to the driver ourselves; SQLAlchemy converts its own values before they get here.
sqlite3.register_adapter(date, date.isoformat)
sqlite3.register_adapter(datetime, sqlite_datetime)


class BulkWriter:
    """Fast inserts inside the caller's transaction: COPY on PostgreSQL, executemany on SQLite."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.postgres = conn.dialect.name == "postgresql"

    def insert(self, table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        rows = list(rows)
        if not rows:
            return 0
        cols = ", ".join(f'"{c}"' for c in columns)
        raw = self.conn.connection.driver_connection
        dbapi = self.conn.dialect.loaded_dbapi
        statement = f'COPY "{table.name}" ({cols}) FROM STDIN'
        try:
            if self.postgres:
                with raw.cursor() as cur, cur.copy(statement) as copy:  # type: ignore[union-attr]
                    for row in rows:
                        copy.write_row(row)
            else:
                marks = ", ".join("?" for _ in columns)
                statement = f'INSERT INTO "{table.name}" ({cols}) VALUES ({marks})'
                raw.executemany(statement, rows)  # type: ignore[union-attr]
        except dbapi.Error as exc:
            # The driver's own error, as SQLAlchemy would have raised it (a full disk, a lost connection: an
            # OperationalError the callers answer as the environment's), without the rows (personal data).
            raise DBAPIError.instance(
                statement, None, exc, dbapi.Error, hide_parameters=True, dialect=self.conn.dialect
            ) from exc
        return len(rows)


OBSERVATION_COLUMNS = (
    "file_id",
    "seq",
    "person_id",
    "fonorg",
    "numorg",
    "matricule",
    "fingerprint",
    "missing_blocks",
    "sdd_entrant",
)
PERSON_COLUMNS = (
    "id",
    "departement_code",
    "nir_hash",
    "nir_encrypted",
    "qual",
    "nom",
    "nomnai",
    "prenom",
    "date_naissance",
    "sexe",
    "stock",
    "first_file_id",
    "first_received_on",
    "updated_file_id",
)


def chunks(values: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


def lock(conn: Connection) -> None:
    """One ingestion at a time, announced as a writer from its first statement; no statement time limit
    (a monthly file is one long transaction)."""
    if conn.dialect.name == "postgresql":
        unlimited_statements(conn)
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _INGEST_LOCK_ID})
    else:
        claim_long_write(conn)  # a marker event posts see at once: they are kept aside (app.orientation.aside)


def next_person_base(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(T_PERSONS.c.id), 0))).scalar_one())
