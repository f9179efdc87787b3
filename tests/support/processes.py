"""Every process a test starts goes through `spawn`, and is stopped when the test ends, even when it fails: a
`passerelle ft sync` left running after a failed assertion would go on writing into the shared test database
and fail the next tests on rows they did not write."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

_started: list[subprocess.Popen[Any]] = []


def spawn(command: list[str], **kw: Any) -> subprocess.Popen[Any]:
    """`subprocess.Popen` in a session of its own (so its children stop with it), remembered until the test
    ends."""
    proc: subprocess.Popen[Any] = subprocess.Popen(command, start_new_session=True, **kw)
    _started.append(proc)
    return proc


def stop(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """SIGTERM to its process group, SIGKILL after `grace` seconds; its pipes closed."""
    if proc.poll() is None:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def stop_all() -> list[str]:
    """Stop every process still running that a test started; returns the commands that were still running."""
    left = []
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            left.append(" ".join(str(a) for a in proc.args) if isinstance(proc.args, list) else str(proc.args))
        stop(proc)
    return left


def nothing_left(pgid: int, grace: float = 5.0) -> None:
    """Assert that no process of the (killed) group `pgid` still runs, within `grace` seconds."""
    deadline = time.monotonic() + grace
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, "a process of the killed job is still running"
        time.sleep(0.05)
