"""Files at rest that hold personal data (flux files in quarantine, the SQLite database and its audit
journal): created readable by the service's user only. A raw flux carries NIRs in clear."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """Create the directory if needed, readable by its owner only, and so every parent it has to create
    (`mkdir(parents=True)` would give those the default mode); existing parents keep theirs."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=DIR_MODE, exist_ok=True)
        os.chmod(directory, DIR_MODE)
    os.chmod(path, DIR_MODE)
    return path


def private_file(path: Path) -> None:
    """Create an empty file mode 600 if it does not exist (an existing file keeps its mode: the operator's).

    An existing file is never opened: closing any descriptor of a file releases every POSIX lock the process
    holds on it, SQLite's included (sqlite.org/howtocorrupt.html, 2.2). Opening and closing a live SQLite
    database here let another process, ending its last connection, believe it was the last one, checkpoint
    and delete the WAL under this process's connections: "database disk image is malformed"."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)


def _create_private(target: Path) -> int:
    """A new (or emptied) file mode 600, never through a world-readable moment."""
    return os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)


def copy_private(source: Path, target: Path) -> None:
    with os.fdopen(_create_private(target), "wb") as out, open(source, "rb") as src:
        shutil.copyfileobj(src, out, 1 << 20)


def write_private_text(target: Path, text: str) -> None:
    with os.fdopen(_create_private(target), "w", encoding="utf-8") as out:
        out.write(text)
