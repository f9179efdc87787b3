"""Who holds a job's lease (host and process), and whether that process may still run: shared by the jobs
that must not run twice at once (`ft sync`, `export weekly`)."""

from __future__ import annotations

import os
import socket


def holder() -> str:
    """This process, as a lease names it."""
    return f"{socket.gethostname()}:{os.getpid()}"[:120]


def alive(name: str | None) -> bool:
    """Whether the process a lease names may still run: on this host, it exists; on another, assume so."""
    if not name or ":" not in name:
        return False
    host, _, pid = name.rpartition(":")
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True
