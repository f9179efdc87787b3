"""Who holds a job's lease (host and process), and whether that process may still run: shared by the jobs
that must not run twice at once (`ft sync`, `export weekly`); how a background thread waits (`pause`)."""

from __future__ import annotations

import os
import socket
import threading
import time


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


STEP_SECONDS = 0.05


def pause(stop: threading.Event, seconds: float) -> bool:
    """Wait `seconds`, or less if `stop` is set meanwhile; True when stopped. In short sleeps rather than
    `Event.wait(timeout)`: a timed wait on a condition never returns under a faked clock (Debian's
    libfaketime, which the date-shifted test runs use), and a background thread must keep its pace."""
    deadline = time.monotonic() + max(seconds, 0.0)
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(STEP_SECONDS, left))
    return True
