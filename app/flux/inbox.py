"""An inbox directory: each file dropped there is ingested, then moved to processed/ or quarantine/."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import Engine

from app.flux.loader import IngestInputError, IngestOptions, ingest_file
from app.kit.files import FILE_MODE, private_dir
from app.settings import Settings

log = structlog.get_logger(__name__)


@dataclass
class Outcome:
    name: str
    status: str  # applied | duplicate | rejected | error
    moved_to: Path
    reason: str | None = None  # why a file was rejected (or could not be taken)
    file_id: int | None = None


def _stable(path: Path) -> bool:
    """A file still being copied changes size: leave it for the next look."""

    first = path.stat().st_size
    time.sleep(0.2)
    return path.exists() and path.stat().st_size == first


def process_inbox(engine: Engine, settings: Settings, inbox: Path, departement: str | None = None) -> list[Outcome]:
    # Both keep raw flux files (NIRs in clear): directories 700, files 600.
    processed, quarantine = private_dir(inbox / "processed"), private_dir(inbox / "quarantine")
    tz = ZoneInfo(settings.business_timezone)
    outcomes = []
    for path in sorted(p for p in inbox.iterdir() if p.is_file() and not p.name.startswith(".")):
        if not _stable(path):
            continue
        landed = datetime.fromtimestamp(path.stat().st_mtime, tz).date()
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
        target_dir = processed if status in ("applied", "duplicate") else quarantine
        target = target_dir / path.name
        if target.exists():
            target = target_dir / f"{datetime.now(tz):%Y%m%dT%H%M%S}-{path.name}"
        shutil.move(str(path), target)
        os.chmod(target, FILE_MODE)
        outcomes.append(Outcome(path.name, status, target, reason, file_id))
    return outcomes
