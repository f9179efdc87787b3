"""An inbox directory: each file dropped there is ingested, then moved to processed/ or quarantine/.

A file is taken once it is complete (issue #24 item 3: a copy paused 40 s was taken after 0.2 s, quarantined
as truncated, then completed inside quarantine/):
- its writer says so: `NAME.done` beside it (taken at once, the marker removed with it), or it was written
  under a name the inbox ignores (a dot file, or a `.part`, `.tmp`, `.filepart`, `.partial` suffix) and renamed;
- otherwise it has been left unchanged for `inbox_settle_seconds` (60 s), measured against the inbox's own file
  system's clock (a file made and removed there), not this process's: a share's server may run ahead or behind;
- and a file that changed while it was read is left in the inbox for the next look, never quarantined.

One watcher at a time per inbox (a lock file in it): an overlapping `flux watch --once` does nothing and says
so (exit 5); a `flux watch` that loops skips that look.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import Engine

from app.errors import Busy
from app.flux.loader import IngestInputError, IngestOptions, ingest_file
from app.kit.files import FILE_MODE, private_dir
from app.settings import Settings

log = structlog.get_logger(__name__)

DONE_SUFFIX = ".done"
TEMPORARY_SUFFIXES = (".part", ".tmp", ".filepart", ".partial", ".crdownload", DONE_SUFFIX)
LOCK_NAME = ".passerelle-watch.lock"


class InboxBusy(Busy):
    code = "inbox_busy"


@dataclass
class Outcome:
    name: str
    status: str  # applied | duplicate | rejected | error
    moved_to: Path
    reason: str | None = None  # why a file was rejected (or could not be taken)
    file_id: int | None = None


@contextmanager
def inbox_lock(inbox: Path) -> Iterator[None]:
    """The inbox for this process alone while the block runs; `InboxBusy` when another watcher has it."""
    fd = os.open(inbox / LOCK_NAME, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InboxBusy(
                f"another `passerelle flux watch` is processing {inbox}; nothing was done, its files are its own"
            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock


def file_system_now(directory: Path) -> float:
    """The time the directory's file system gives a file written now (the clock its files' times come from)."""
    fd, name = tempfile.mkstemp(prefix=".passerelle-now-", dir=directory)
    try:
        return os.fstat(fd).st_mtime
    finally:
        os.close(fd)
        os.unlink(name)


def _candidates(inbox: Path) -> list[Path]:
    return sorted(
        p
        for p in inbox.iterdir()
        if p.is_file() and not p.name.startswith(".") and not p.name.lower().endswith(TEMPORARY_SUFFIXES)
    )


def _complete(path: Path, now: float, settle: float) -> bool:
    """Whether its writer is done with it: it says so (`NAME.done`), or it has not changed for `settle`."""
    if path.with_name(path.name + DONE_SUFFIX).exists():
        return True
    return now - path.stat().st_mtime >= settle


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def process_inbox(
    engine: Engine, settings: Settings, inbox: Path, departement: str | None = None, settle: float | None = None
) -> list[Outcome]:
    """Take every complete file of the inbox (see the module); `InboxBusy` when another watcher has it."""
    settle = settings.inbox_settle_seconds if settle is None else settle
    # Both keep raw flux files (NIRs in clear): directories 700, files 600.
    processed, quarantine = private_dir(inbox / "processed"), private_dir(inbox / "quarantine")
    with inbox_lock(inbox):
        now = file_system_now(inbox)
        outcomes = []
        for path in _candidates(inbox):
            try:
                if not _complete(path, now, settle):
                    continue
            except FileNotFoundError:  # taken away by someone else since the listing
                continue
            outcome = _take(engine, settings, path, departement, processed, quarantine)
            if outcome is not None:
                outcomes.append(outcome)
    return outcomes


def _take(
    engine: Engine, settings: Settings, path: Path, departement: str | None, processed: Path, quarantine: Path
) -> Outcome | None:
    """Ingest one file and move it; None when it changed while read (left for the next look) or vanished."""
    tz = ZoneInfo(settings.business_timezone)
    before = _signature(path)
    if before is None:
        return None
    landed = datetime.fromtimestamp(before[1] / 1e9, tz).date()
    options = IngestOptions(received_on=landed, departement=departement, ingested_by="watch")
    reason: str | None = None
    file_id: int | None = None
    try:
        report = ingest_file(engine, settings, path, options)
        status, file_id = report.status, report.file_id
        if status == "rejected":
            reason = f"{report.error_code}: {report.error}"
    except IngestInputError as exc:
        log.warning("watch_input_error", file=path.name, error=str(exc))
        status, reason = "error", str(exc)
    if status in ("rejected", "error") and _signature(path) != before:
        log.warning("watch_file_still_written", file=path.name)  # its writer is not done: the next look
        return None
    target_dir = processed if status in ("applied", "duplicate") else quarantine
    target = target_dir / path.name
    if target.exists():
        target = target_dir / f"{datetime.now(tz):%Y%m%dT%H%M%S}-{path.name}"
    try:
        shutil.move(str(path), target)
    except FileNotFoundError:  # moved away by hand meanwhile: what was ingested is recorded all the same
        log.warning("watch_file_gone", file=path.name)
        return None
    os.chmod(target, FILE_MODE)
    path.with_name(path.name + DONE_SUFFIX).unlink(missing_ok=True)
    return Outcome(path.name, status, target, reason, file_id)
