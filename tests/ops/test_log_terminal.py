"""Logs at a terminal (issue #26): a person running a command reads its output, not JSON lines; cron, a pipe
and the server keep JSON lines for the log collector. Decided in app/logging.py, documented in the README."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from app import cli
from app import logging as app_logging
from app.settings import get_settings


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    get_settings.cache_clear()


def _setup(monkeypatch, terminal: bool, **env: str) -> None:
    for name in ("PASSERELLE_LOG_LEVEL", "PASSERELLE_LOG_JSON"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(app_logging, "stderr_is_terminal", lambda: terminal)
    get_settings.cache_clear()
    cli._setup()


def _log_both() -> None:
    log = structlog.get_logger("app.test")
    log.info("step_done", files=2)
    log.warning("file_late", days=4)


def test_at_a_terminal_a_command_shows_warnings_only_in_human_lines(monkeypatch, capsys, restore_logging) -> None:
    _setup(monkeypatch, terminal=True)
    _log_both()
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, lines
    assert "file_late" in lines[0] and "days=4" in lines[0] and "warning" in lines[0]
    assert not lines[0].lstrip().startswith("{")


def test_elsewhere_json_lines_at_info(monkeypatch, capsys, restore_logging) -> None:
    _setup(monkeypatch, terminal=False)
    _log_both()
    lines = capsys.readouterr().err.splitlines()
    events = [json.loads(line)["event"] for line in lines]
    assert events == ["step_done", "file_late"]


def test_the_settings_win_at_a_terminal(monkeypatch, capsys, restore_logging) -> None:
    _setup(monkeypatch, terminal=True, PASSERELLE_LOG_JSON="true", PASSERELLE_LOG_LEVEL="INFO")
    _log_both()
    lines = capsys.readouterr().err.splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["step_done", "file_late"]


def test_human_lines_are_redacted_too(monkeypatch, capsys, restore_logging) -> None:
    _setup(monkeypatch, terminal=True)
    structlog.get_logger("app.test").warning("lookup", nir="1840312345678", detail="for 1840312345678")
    err = capsys.readouterr().err
    assert "1840312345678" not in err and app_logging.REDACTED in err
