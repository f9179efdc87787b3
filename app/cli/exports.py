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

export_app = typer.Typer(
    help="Weekly files for France Travail (Fil'R-style links by e-mail).", no_args_is_help=True, rich_markup_mode=None
)


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
    publishing; 3 when the mail server, the settings or the disk fail (nothing half-published: the next run
    retries that week); 2 for a week not over yet, or before the week of the département's first flux file
    (the others still published). Without --week, the weeks whose e-mail failed are retried first, until
    sent or cancelled (`export cancel`); a run stopped after the mail server took the e-mail but before it
    was recorded sends that same message again (same Message-ID and links), never a second one."""
    from app.clock import today
    from app.db import get_engine
    from app.exports.publish import PublishError, publish, weeks_to_retry
    from app.exports.weekly import Week, WeekError

    settings = ready_settings()
    day = today(settings)
    try:
        target = Week.parse(week, day) if week else Week.last_complete(day)
    except WeekError as exc:
        raise fail(str(exc), ExitCode.USAGE) from None
    codes = chosen_departements(departement)
    manifests, rows, refused = [], [], []
    engine = get_engine(settings)
    for code in codes:
        # the default run first retries the weeks whose e-mail failed, until sent or cancelled (issue #24)
        retried = [label for label in weeks_to_retry(engine, code) if label != target.label] if week is None else []
        for label in [*retried, target.label]:
            if label != target.label:
                err_console.print(f"{code}: week {label}: its e-mail had failed, sent again now "
                                  f"(`passerelle export cancel --departement {code} --week {label}` stops this)",
                                  highlight=False, soft_wrap=True)  # fmt: skip
            try:
                result = publish(engine, settings, code, Week.parse(label, day), resend=resend)
            except WeekError as exc:  # this département has no such week: said, the others still published
                if week is None and exc.code == "no_flux_yet":  # the weekly run, for a département not started
                    err_console.print(f"{code}: {exc.message}", highlight=False, soft_wrap=True)
                    continue
                err_console.print(f"[bold red]error:[/] {exc.message}", highlight=False, soft_wrap=True)
                refused.append(code)
                continue
            except (PublishError, OSError) as exc:
                raise fail(f"département {code}, week {label}: {exc}", ExitCode.ENVIRONMENT) from None
            manifests.append(result.manifest() | {"envoye": result.mailed, "meme_message_renvoye": result.resumed})
            state = _mail_state(result)
            rows += [(code, label, f.kind, f.rows, f.sha256[:12], state) for f in result.files]
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


def _mail_state(result: object) -> str:
    if getattr(result, "resumed", False):
        return "sent (the same e-mail again: the previous run stopped before recording it)"
    return "sent" if getattr(result, "mailed", False) else "already published, nothing sent"


@export_app.command("cancel")
def export_cancel(
    departement: Annotated[str, typer.Option(help="Département, e.g. 055")],
    week: Annotated[str, typer.Option(help="ISO week whose e-mail is not to be retried, e.g. 2024-W10")],
) -> None:
    """Stop retrying a week's e-mail (failed, or left unconfirmed by a run that stopped): its links revoked,
    nothing sent; audited. Exit 2 when that week has no e-mail pending."""
    from app.clock import today
    from app.db import get_engine
    from app.exports.publish import cancel
    from app.exports.weekly import Week, WeekError

    settings = ready_settings()
    (code,) = chosen_departements(departement)
    try:
        label = Week.parse(week, today(settings)).label
    except WeekError as exc:
        raise fail(str(exc), ExitCode.USAGE) from None
    if not cancel(get_engine(settings), settings, code, label, "job:export cancel"):
        raise fail(f"département {code}, week {label}: no e-mail pending (failed or unconfirmed)", ExitCode.USAGE)
    console.print(f"département {code}, week {label}: e-mail cancelled, its links revoked", highlight=False)
