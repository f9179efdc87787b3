"""What an ingestion is given and what it answers: the options, the received file, the report, the errors."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from app.errors import ExitCode, Unprocessable

MAX_LISTED = 1000  # warnings / rejected records listed in a report (all are counted)
MAX_REASON = 300  # characters of a rejection's reason kept in the report and the database


class IngestInputError(Unprocessable, ValueError):
    """A wrong option given with the file (not a problem of the file itself): nothing is recorded."""

    exit_code = ExitCode.USAGE


class ReferenceIntegrityError(RuntimeError):
    """Stored rows point to a person who does not exist. The bulk tables carry no foreign keys (on
    PostgreSQL each check cost as much as the row's write); the ingestion, their only writer, checks the
    references it relies on instead, and refuses to build on a broken one: nothing of the file is applied."""


@dataclass
class IngestOptions:
    received_on: date
    initial_stock: bool = False
    departement: str | None = None  # expected département; None: the file's own (first foyer)
    ingested_by: str | None = None
    display_name: str | None = None
    parallel: bool | None = None  # read the file in a child process (default: for big files)


@dataclass
class IngestReport:
    status: str  # applied | duplicate | rejected
    filename: str
    file_id: int | None = None
    departement: str | None = None
    organisme: str | None = None
    type_flux: str | None = None
    created_at_caf: str | None = None
    received_on: str | None = None
    initial_stock: bool = False
    foyers: int = 0
    persons_read: int = 0
    persons_brsa: int = 0
    persons_not_stored: int = 0
    new_persons: int = 0
    state_changes: int = 0
    unchanged: int = 0
    absences: int = 0
    # Files dated after this one applied before it, and the persons whose later facts were re-examined.
    later_files: int = 0
    reexamined: int = 0
    # NATFLUX: D a beneficiary flux, I an instruction flux (its persons attached now, or kept aside until a
    # beneficiary file brings them; beneficiary files report how many they attached)
    nature: str = "D"
    webhook_events_matched: int = 0  # partners' events waiting for a person this file brought
    pending_events_applied: int = 0  # orientation events kept aside for a person this file brought
    pending_events_ms: int = 0  # how long matching and applying them took (after the commit)
    instruction_attached: int = 0
    instruction_kept_aside: int = 0
    matched_by: dict[str, int] = field(default_factory=dict)
    # Foyers whose FONORG is not the sender told by APPLIEME (CRI/NRA/NRS: CAF; AGO: MSA): kept, reported.
    sender_mismatches: int = 0
    # Records joined to a known person by names and birth date alone (each a warning and an
    # `identity_matches` row to review), and those refused because the files show that person in another
    # foyer on the same date (each a warning; a new person is created).
    identity_only_matches: int = 0
    identity_matches_refused: int = 0
    warnings_count: int = 0
    rejected_count: int = 0
    warnings: list[dict[str, str]] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    error_code: str | None = None
    error: str | None = None
    error_position: str | None = None
    duplicate_of: int | None = None
    duration_ms: int = 0
    quarantine_path: str | None = None
    # After the commit: the entry episodes brought up to date (persons), or why not.
    episodes_refreshed: int | None = None
    episodes_ms: int | None = None
    episodes_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def warn(self, code: str, message: str) -> None:
        self.warnings_count += 1
        if len(self.warnings) < MAX_LISTED:
            self.warnings.append({"code": code, "message": message})

    def reject(self, code: str, message: str) -> None:
        """A record (foyer or person) set aside; the file is applied without it."""
        self.rejected_count += 1
        if len(self.rejected) < MAX_LISTED:
            self.rejected.append({"code": code, "message": message})


ProgressCallback = Callable[[int, int], None]  # (foyers done, bytes read)


def file_sha256(path: Path) -> tuple[str, int]:
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


@dataclass(frozen=True)
class ReceivedFile:
    """A file as received, before anything of it is read: where it is, the name it is reported under, the
    digest and size of its bytes, the options it came with and when its ingestion started."""

    path: Path
    name: str
    sha256: str
    size: int
    options: IngestOptions
    started: float  # time.perf_counter() when its ingestion started

    @classmethod
    def of(cls, path: Path, options: IngestOptions, started: float) -> ReceivedFile:
        sha, size = file_sha256(path)
        return cls(path, options.display_name or path.name, sha, size, options, started)

    @property
    def received_on(self) -> date:
        return self.options.received_on

    def elapsed_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)
