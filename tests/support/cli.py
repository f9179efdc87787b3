"""Run the `passerelle` CLI in-process against the test database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from typer.testing import CliRunner


def cli_environment(settings, monkeypatch) -> None:
    """The environment a `passerelle` command run in-process reads its settings from: these settings'."""
    from app.settings import get_settings

    for name in ("database_url", "data_dir", "nir_encryption_keys", "nir_hmac_key", "api_key_pepper"):
        value = getattr(settings, name)
        value = value.get_secret_value() if hasattr(value, "get_secret_value") else value
        monkeypatch.setenv(f"PASSERELLE_{name.upper()}", str(value))
    monkeypatch.setenv("PASSERELLE_ENV", "test")
    get_settings.cache_clear()


def run_cli(settings, monkeypatch, *args):
    from app import cli
    from app.settings import get_settings

    cli_environment(settings, monkeypatch)
    try:
        return CliRunner().invoke(cli.app, [str(a) for a in args], catch_exceptions=False)
    finally:
        get_settings.cache_clear()


@contextmanager
def registered_command(name: str, function: Callable[..., Any]) -> Iterator[Any]:
    """`function` registered as the command `name` on the real root app (removed after): the root app."""
    from app import cli

    cli.app.command(name)(function)
    info = cli.app.registered_commands[-1]
    try:
        yield cli.app
    finally:
        cli.app.registered_commands.remove(info)
