"""A real ingestion held inside its transaction (its département's lock taken, its first batch written) while a
test does something else, then let go: how the tests show what waits for a file and what does not."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

from app.db import get_engine
from app.flux.loader import IngestOptions, ingest_file
from app.settings import Settings


@contextmanager
def ingestion_held(
    db: Settings, path: Path, day: date, fail: Exception | None = None, ends: str = "applied"
) -> Iterator[dict[str, Any]]:
    """`path` ingested in a thread, held at its first progress report until the block ends; then it commits (or,
    given `fail`, raises it from inside the file: it ends `ends`) and its post-commit steps run. Its report in
    `result["report"]`."""
    started, release = threading.Event(), threading.Event()
    result: dict[str, Any] = {}

    def progress(_foyers: int, _bytes: int) -> None:
        if not started.is_set():
            started.set()
            release.wait(120)
            if fail is not None:
                raise fail

    def run() -> None:
        try:
            result["report"] = ingest_file(get_engine(db), db, path, IngestOptions(day), progress)
        except BaseException as exc:  # said by the test
            result["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    try:
        assert started.wait(60), result
        yield result
    finally:
        release.set()
        worker.join(120)
    assert not worker.is_alive()
    assert "error" not in result, result
    assert result["report"].status == ends, result["report"]
