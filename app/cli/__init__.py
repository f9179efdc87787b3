"""`passerelle`: every job a person or cron runs (server, migrations, clients, flux, pilotage, demo).

One module per domain, as `app/api/`. Exit codes, the same for every command (docs/operations.md):
0 done, 1 input rejected, 2 usage, 3 environment (database unreachable or not migrated, a setting
missing or wrong), 4 internal error, 5 busy (another run of the same job holds its lock).
"""

from __future__ import annotations

import sys

import structlog
import typer
from rich.markup import escape as escape_markup

from app.cli.audit import audit_app
from app.cli.clients import clients_app, departements_app
from app.cli.common import ExitCode, PasserelleGroup, err_console
from app.cli.dashboard import dashboard_app
from app.cli.db import db_app
from app.cli.exports import export_app
from app.cli.flux import flux_app
from app.cli.france_travail import ft_app
from app.cli.maintenance import register as register_maintenance
from app.cli.orientations import episodes_app, orientations_app
from app.cli.persons import persons_app
from app.cli.pilotage import pilotage_app
from app.cli.server import register as register_server
from app.cli.webhooks import webhooks_app
from app.settings import ConfigurationError, get_settings

app = typer.Typer(
    cls=PasserelleGroup,
    help="Passerelle RSA: CAF/MSA flux, orientation delays, France Travail exchanges. Exit codes: 0 done, "
    "1 input rejected, 2 usage, 3 environment (database, settings), 4 internal error, 5 busy, 6 untrusted "
    "checkpoint.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
register_server(app)
register_maintenance(app)
app.add_typer(db_app, name="db")
app.add_typer(departements_app, name="departements")
app.add_typer(clients_app, name="clients")
app.add_typer(flux_app, name="flux")
app.add_typer(orientations_app, name="orientations")
app.add_typer(episodes_app, name="episodes")
app.add_typer(persons_app, name="persons")
app.add_typer(pilotage_app, name="pilotage")
app.add_typer(dashboard_app, name="dashboard")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(ft_app, name="ft")
app.add_typer(export_app, name="export")
app.add_typer(audit_app, name="audit")


@app.callback()
def _setup() -> None:
    """Logs go to stderr, so stdout stays for results. At a terminal, unless PASSERELLE_LOG_LEVEL or
    PASSERELLE_LOG_JSON say otherwise: human lines, warnings and errors only (the command says what it
    did); elsewhere (cron, a pipe, a supervisor): JSON lines at INFO for the log collector."""
    from app.logging import configure_logging, stderr_is_terminal

    settings = get_settings()
    level = settings.log_level or ("WARNING" if stderr_is_terminal() else "INFO")
    configure_logging(level, settings.log_json)


def main() -> None:
    """The `passerelle` command: click handles usage errors (2) and the commands' own exits; what escapes
    them is a configuration error (3) or a bug (4), each said in one line, the bug's details logged."""
    try:
        app()
    except ConfigurationError as exc:
        err_console.print(
            f"[bold red]configuration error:[/] {escape_markup(str(exc))}", highlight=False, soft_wrap=True
        )
        sys.exit(ExitCode.ENVIRONMENT)
    except Exception as exc:  # the last resort: one line, the details in the log
        structlog.get_logger("app.cli").exception("internal_error", error_type=type(exc).__name__)
        err_console.print(
            f"[bold red]internal error:[/] {type(exc).__name__} (details in the log above); please report it",
            highlight=False,
        )
        sys.exit(ExitCode.INTERNAL)
