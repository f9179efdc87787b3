"""Batches of prepared foyers from a flux file, read inline or by a child process.

Reading a big file (parsing XML in libxml2, building records, deriving keys, hashes and states in Python)
and applying it (resolving identities, database writes) each take a large part of an ingestion. On a big
file the reading runs in a separate process, one bounded queue of batches ahead of the database work, so
the two use both cores. A thread would not help: both halves need the GIL (measured slower). Small files
are read inline (starting a process costs more than it saves).

Batches cross between the processes as `marshal` bytes of plain tuples (`derive.Prepared`): pickling the
typed records cost more than a third of the whole ingestion (bench/BENCHMARKS.md, runs 6 and 7). The
reading process runs without the cyclic garbage collector: it creates no reference cycles, and the
collector's passes over each batch in flight cost ~10 % of its time; its memory is measured (≈ 120 MB).
"""

from __future__ import annotations

import gc
import marshal
import multiprocessing as mp
import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.flux.envelope import FluxLimits, FluxRejected, peek_nature
from app.flux.records import FluxHeader
from app.settings import Settings

# Light to import on purpose (no SQLAlchemy, no models): `passerelle flux ingest` starts the reading process
# before its own heavy imports (`open_early`); what reading needs is imported where it is used.

PARALLEL_MIN_BYTES = 20 * 1024 * 1024
BATCH_FOYERS = 2000
QUEUE_DEPTH = 2  # batches in flight: bounds the memory of the pipeline


class InlineSource:
    def __init__(self, path: Path, batch_size: int, hmac_key: bytes, limits: FluxLimits) -> None:
        from app.flux.derive import Deriver
        from app.flux.reader import FluxReader

        self.reader = FluxReader(path, limits)
        self.batch_size = batch_size
        self.deriver = Deriver(hmac_key)

    @property
    def header(self) -> FluxHeader | None:
        return self.reader.header

    @property
    def content_sha256(self) -> str:
        return self.reader.content_sha256

    @property
    def bytes_read(self) -> int:
        return self.reader.bytes_read

    def batches(self) -> Iterator[list[tuple[Any, ...]]]:
        batch: list[tuple[Any, ...]] = []
        prepare = self.deriver.prepare
        for record in self.reader:
            batch.append(prepare(record))
            if len(batch) >= self.batch_size:
                yield batch
                batch = []
        yield batch  # possibly empty: the consumer learns the header even from a file without foyers

    def close(self) -> None:
        return None


PARENT_WATCH_SECONDS = 0.5


def _exit_with_parent(parent_pid: int) -> None:
    """End this process as soon as its parent is gone, whatever killed it (`kill -9` included): an orphaned
    reader would hold the file and the HMAC key, and nobody would read what it sends (issue #8). The
    parent's death re-parents us, which `getppid` sees; polled from a daemon thread because the main
    thread may be blocked in libxml2 or on a full queue."""

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(70)
            time.sleep(PARENT_WATCH_SECONDS)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _read_in_child(path: str, batch_size: int, hmac_key: bytes, limits: FluxLimits, out: Any, parent_pid: int) -> None:
    _exit_with_parent(parent_pid)
    gc.disable()
    from app.flux.derive import Deriver
    from app.flux.reader import FluxReader

    reader = FluxReader(Path(path), limits)
    prepare = Deriver(hmac_key).prepare
    try:
        batch: list[tuple[Any, ...]] = []
        for record in reader:
            batch.append(prepare(record))
            if len(batch) >= batch_size:
                out.put(("batch", reader.header, marshal.dumps(batch), reader.bytes_read))
                batch = []
        out.put(("batch", reader.header, marshal.dumps(batch), reader.bytes_read))
        out.put(("end", reader.content_sha256))
    except FluxRejected as exc:
        out.put(("rejected", exc.reason, exc.position, exc.code, exc.foyers_read, exc.departement))
    except BaseException as exc:  # handed to the parent, which decides
        out.put(("crash", f"{type(exc).__name__}: {exc}"))


class ProcessSource:
    def __init__(self, path: Path, batch_size: int, hmac_key: bytes, limits: FluxLimits) -> None:
        ctx = mp.get_context("spawn")  # a clean process: never a copy of our database connections
        self._queue: Any = ctx.Queue(maxsize=QUEUE_DEPTH)
        self._process = ctx.Process(
            target=_read_in_child,
            args=(str(path), batch_size, hmac_key, limits, self._queue, os.getpid()),
            name="flux-reader",
            daemon=True,
        )
        self._process.start()
        self.header: FluxHeader | None = None
        self.content_sha256 = ""
        self.bytes_read = 0

    def _get(self) -> tuple[Any, ...]:
        while True:
            try:
                message: tuple[Any, ...] = self._queue.get(timeout=1.0)
                return message
            except queue.Empty:
                if not self._process.is_alive():
                    raise RuntimeError("the flux reader process stopped unexpectedly") from None

    def batches(self) -> Iterator[list[tuple[Any, ...]]]:
        while True:
            message = self._get()
            kind = message[0]
            if kind == "batch":
                self.header, blob, self.bytes_read = message[1], message[2], message[3]
                yield marshal.loads(blob)  # noqa: S302 - bytes our own reading process wrote
            elif kind == "end":
                self.content_sha256 = message[1]
                return
            elif kind == "rejected":
                raise FluxRejected(*message[1:])
            else:
                raise RuntimeError(f"the flux reader failed: {message[1]}")

    def close(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
        self._process.join(timeout=5)
        self._queue.close()


def open_source(
    path: Path,
    batch_size: int,
    hmac_key: bytes,
    parallel: bool | None = None,
    min_bytes: int = PARALLEL_MIN_BYTES,
    limits: FluxLimits | None = None,
) -> InlineSource | ProcessSource:
    if parallel is None:
        parallel = path.stat().st_size >= min_bytes
    limits = limits or FluxLimits()
    source = ProcessSource if parallel else InlineSource
    return source(path, batch_size, hmac_key, limits)


def open_early(settings: Settings, path: Path, parallel: bool | None = None) -> InlineSource | ProcessSource | None:
    """A beneficiary file's batches, opened before anything else: a big file's reading process (a new
    interpreter, its imports, the first batch) starts while this one imports the loader, checks the database,
    hashes the file, checks it is not a duplicate and takes the lock (issue #27: the reading process is the
    longer half of an ingestion, so its start is the operator's wait). None for an instruction flux or a
    file that cannot be opened (told the usual way, further on). The caller closes it, read or not."""
    try:
        if peek_nature(path) == "I":
            return None
        return open_source(
            path,
            BATCH_FOYERS,
            settings.hmac_key,
            parallel,
            settings.ingest_parallel_min_bytes,
            FluxLimits.of(settings),
        )
    except OSError:
        return None
