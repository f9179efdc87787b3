"""Every `PasserelleError` a command lets escape is said in one line, `error: <message>`, and ends the
command with its own exit code, in one place: the root group (app.cli.common.PasserelleGroup)."""

from __future__ import annotations

import importlib

import pytest
from typer.testing import CliRunner

from app.errors import ExitCode, PasserelleError, TooManyRequests
from tests.support.cli import registered_command, run_cli

# the modules that define the domains' errors (the commands import them only when they run)
_ERROR_MODULES = (
    "app.admin.clients", "app.admin.keys", "app.exports.links", "app.exports.publish", "app.exports.weekly",
    "app.flux.report", "app.france_travail.errors", "app.france_travail.sync", "app.pilotage.communes",
    "app.pilotage.period",
)  # fmt: skip


def _subclasses(cls: type[PasserelleError]) -> list[type[PasserelleError]]:
    found: list[type[PasserelleError]] = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def _every_error() -> list[type[PasserelleError]]:
    for name in _ERROR_MODULES:
        importlib.import_module(name)
    return sorted({PasserelleError, *_subclasses(PasserelleError)}, key=lambda c: f"{c.__module__}.{c.__name__}")


def _instance(cls: type[PasserelleError], message: str) -> PasserelleError:
    return cls(message, 7) if issubclass(cls, TooManyRequests) else cls(message)  # type: ignore[call-arg]


@pytest.fixture()
def raising_command():
    """A command registered on the real root app for the test (removed after), raising what it is given."""
    raised: list[PasserelleError] = []

    def boom() -> None:
        raise raised[0]

    with registered_command("test-raise", boom) as app:
        yield app, raised


def test_the_errors_are_found():
    names = {c.__name__ for c in _every_error()}
    assert {"Busy", "NotConfigured", "NotFound", "ExportBusy", "SyncBusy", "PeriodError", "LinkGone"} <= names
    assert {"FranceTravailUnavailableError", "FranceTravailAnswerError", "ClientError"} <= names


@pytest.mark.parametrize("error_class", _every_error(), ids=lambda c: c.__name__)
def test_each_error_is_one_line_and_its_exit_code(error_class, raising_command):
    app, raised = raising_command
    message = f"{error_class.__name__} happened, nothing was done"
    raised[:] = [_instance(error_class, message)]
    result = CliRunner().invoke(app, ["test-raise"], catch_exceptions=False)
    assert result.exit_code == int(error_class.exit_code), result.output
    assert result.output == f"error: {message}\n"
    assert "Traceback" not in result.output


def test_the_families_exit_codes():
    from app.exports.publish import ExportBusy, ExportsNotConfigured
    from app.france_travail.sync import SyncBusy
    from app.pilotage.period import PeriodError

    assert ExportBusy.exit_code == SyncBusy.exit_code == ExitCode.BUSY == 5
    assert PeriodError.exit_code == ExitCode.USAGE == 2
    assert ExportsNotConfigured.exit_code == ExitCode.ENVIRONMENT == 3


def test_real_commands_through_the_root_group(db, monkeypatch):
    """A missing export setting (3, raised by the domain, said by the root group), an unknown période (2)."""
    monkeypatch.delenv("PASSERELLE_PUBLIC_URL", raising=False)
    assert run_cli(db, monkeypatch, "departements", "add", "055").exit_code == 0
    r = run_cli(db, monkeypatch, "export", "weekly", "--departement", "055")
    assert r.exit_code == 3, r.output
    assert r.output.startswith("error: ") and "PASSERELLE_" in r.output and "Traceback" not in r.output
    r = run_cli(db, monkeypatch, "pilotage", "table", "nouveaux-entrants", "--periode", "1800-01")
    assert r.exit_code == 2, r.output
    assert "error: --periode" in r.output and "Traceback" not in r.output
    # an unknown revision to downgrade to: the caller's mistake (2) in one line, the schema untouched
    r = run_cli(db, monkeypatch, "db", "downgrade", "0099")
    assert r.exit_code == 2, r.output
    assert "error: revision '0099'" in r.output and "Traceback" not in r.output
    assert run_cli(db, monkeypatch, "db", "current").exit_code == 0  # still at head
