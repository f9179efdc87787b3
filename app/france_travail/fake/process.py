"""The fake France Travail run as a separate process, and settings pointed at it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from pydantic import SecretStr


@contextmanager
def running_fake(seed: int = 1, startup_seconds: float = 20) -> Iterator[str]:
    """Start the fake as a separate process on a free loopback port; yield its base URL; stop it after."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PASSERELLE_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(  # noqa: S603 - our own command, fixed arguments
        [sys.executable, "-m", "app.cli", "fake-ft", "serve", "--port", str(port), "--seed", str(seed)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(base, proc, startup_seconds)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_until_up(base: str, proc: subprocess.Popen[bytes], startup_seconds: float) -> None:
    """Poll the fake at `base` until it answers; RuntimeError when it exited or took too long."""
    deadline = time.monotonic() + startup_seconds
    while True:
        try:
            if httpx.get(f"{base}/_fake/faults", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the fake France Travail did not start") from None
            time.sleep(0.1)


def pointed_at(settings: Any, base: str, **over: Any) -> Any:
    """`settings` (app.settings.Settings) pointed at a fake France Travail running at `base`, with its
    default client; `over`: further settings."""

    values = {
        "ft_auth_url": base,
        "ft_api_url": f"{base}/partenaire",
        "ft_client_id": "passerelle-fake",
        "ft_client_secret": SecretStr("fake-secret"),
    }
    return settings.model_copy(update=values | over)
