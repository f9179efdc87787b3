"""The tables an ingestion writes and how it writes them: bulk inserts per backend (COPY on PostgreSQL,
executemany on SQLite), the one-ingestion-per-département lock, new persons' ids, the columns of the rows it
builds."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, func, select, text
from sqlalchemy.exc import DBAPIError

from app.db import INGESTION_LOCK_NS, claim_long_write, departement_lock_key, unlimited_statements
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

# PostgreSQL: new persons' ids (migration 0030; on SQLite, one writer at a time, `max(id)` + n)
PERSON_ID_SEQUENCE = "persons_id_seq"
_ID_BLOCK_MAX = 10_000  # ids taken from the sequence at once, at most


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


def begin_ingestion(conn: Connection) -> None:
    """A long writer's transaction (an ingestion, a split), announced as such from its first statement: no
    statement time limit on PostgreSQL (a monthly file is one long transaction); on SQLite, the write claim
    with its marker, which event posts see at once: they are kept aside (app.orientation.aside)."""
    if conn.dialect.name == "postgresql":
        unlimited_statements(conn)
    else:
        claim_long_write(conn)


def lock_departement(conn: Connection, departement: str) -> None:
    """One ingestion at a time per département, until this transaction ends, taken before it writes anything
    of the département (app.db.INGESTION_LOCK_NS: why the files of different départements need not wait for
    each other, and why no cycle of waits forms). SQLite: the write claim of `begin_ingestion` serialises
    every writer already."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:ns, :k)"),
            {"ns": INGESTION_LOCK_NS, "k": departement_lock_key(departement)},
        )


class PersonIds:
    """New persons' ids, for one transaction. PostgreSQL: from the sequence `persons_id_seq`, shared by the
    ingestions of every département that run side by side (a `max(id)` would be the same for two of them:
    neither sees the other's uncommitted persons). Taken in growing blocks (1, 2, 4... up to 10,000, never
    more than the records left in the batch: a file whose persons are all new uses every id it takes), so
    that an initial stock costs one round trip per batch, not one per person; the ids a file took and did
    not use are gaps, as a rolled-back file's are. SQLite: after `max(id)`, read once (its one writer)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.postgres = conn.dialect.name == "postgresql"
        self._free: list[int] = []  # taken, not given yet: in descending order (`pop` gives the smallest)
        self._block = 1
        self._last: int | None = None  # SQLite

    def take(self, room: int = 1) -> int:
        """The next new person's id; `room`: how many more this batch may still ask for (this one included)."""
        if not self.postgres:
            if self._last is None:
                self._last = max_person_id(self.conn)
            self._last += 1
            return self._last
        if not self._free:
            n = max(1, min(self._block, room))
            self._block = min(self._block * 2, _ID_BLOCK_MAX)
            taken = self.conn.execute(
                text(f"SELECT nextval('{PERSON_ID_SEQUENCE}') FROM generate_series(1, :n)"), {"n": n}
            ).scalars()
            self._free = sorted((int(v) for v in taken), reverse=True)
        return self._free.pop()


def max_person_id(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(T_PERSONS.c.id), 0))).scalar_one())
