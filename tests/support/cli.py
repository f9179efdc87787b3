"""Run the `passerelle` CLI in-process against the test database."""

from __future__ import annotations

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
