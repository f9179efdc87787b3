"""`passerelle export`: the weekly files for France Travail, built, encrypted, announced by e-mail."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.common import (
    ExitCode,
    chosen_departements,
    console,
    err_console,
    fail,
    print_json,
    print_rows,
    ready_settings,
)

export_app = typer.Typer(help="Weekly files for France Travail (Fil'R-style links by e-mail).", no_args_is_help=True)


@export_app.command("weekly")
def export_weekly(
    week: Annotated[str | None, typer.Option(help="ISO week, e.g. 2024-W10 (default: the last complete week)")] = None,
    departement: Annotated[str | None, typer.Option(help="Département (default: every département)")] = None,
    resend: Annotated[bool, typer.Option("--resend", help="Send new links even if already published")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The manifests as JSON on stdout")] = False,
) -> None:
    """Build the week's flux file (annexe 1) and pilotage file (annexe 4) of each département, encrypt them,
    e-mail one expiring link per file to PASSERELLE_EXPORT_RECIPIENTS. Idempotent: a second run rebuilds
    the same bytes and sends nothing (unless --resend). Exit 5 when another run of the same département is
    publishing; 3 when the mail server, the settings or the disk fail (nothing half-published); 2 for a week
    not over yet, or before the week of the département's first flux file (the others still published)."""
    from app.clock import today
    from app.db import get_engine
    from app.exports.publish import PublishError, publish
    from app.exports.weekly import Week, WeekError

    settings = ready_settings()
    day = today(settings)
    try:
        target = Week.parse(week, day) if week else Week.last_complete(day)
    except WeekError as exc:
        raise fail(str(exc), ExitCode.USAGE) from None
    codes = chosen_departements(departement)
    manifests, rows, refused = [], [], []
    for code in codes:
        try:
            result = publish(get_engine(settings), settings, code, target, resend=resend)
        except WeekError as exc:  # this département has no such week: said, the others still published
            if week is None and exc.code == "no_flux_yet":  # the weekly run, for a département not started
                err_console.print(f"{code}: {exc.message}", highlight=False, soft_wrap=True)
                continue
            err_console.print(f"[bold red]error:[/] {exc.message}", highlight=False, soft_wrap=True)
            refused.append(code)
            continue
        except (PublishError, OSError) as exc:
            raise fail(f"département {code}, week {target.label}: {exc}", ExitCode.ENVIRONMENT) from None
        manifests.append(result.manifest() | {"envoye": result.mailed})
        state = "sent" if result.mailed else "already published, nothing sent"
        rows += [(code, target.label, f.kind, f.rows, f.sha256[:12], state) for f in result.files]
    if as_json:
        print_json(manifests)
        if refused:
            raise typer.Exit(int(ExitCode.USAGE))
        return
    print_rows(("dép.", "week", "file", "rows", "sha256", "e-mail"), rows, narrow=("dép.", "file", "rows", "e-mail"))
    if not codes:
        err_console.print("no département configured: nothing to export", highlight=False)
    console.print(
        f"files under {settings.data_dir / 'exports'} (encrypted); manifest.json beside them", highlight=False
    )
    if refused:
        raise typer.Exit(int(ExitCode.USAGE))
