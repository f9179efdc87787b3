"""`passerelle ft`: France Travail from cron: sync the persons the platform works on, push the orientation
decisions waiting in the outbox."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from app.cli.common import (
    ExitCode,
    console,
    err_console,
    fail,
    print_json,
    print_rows,
    ready_settings,
    validated_departement,
)

ft_app = typer.Typer(
    help="France Travail: sync persons (Rechercher usager, statut, diagnostic), push orientations.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

OUTCOME_LABELS = {
    "found": "found (statut and diagnostic fetched)",
    "unknown": "unknown to France Travail (S002)",
    "ambiguous": "several matches (S003)",
    "not_certified": "not certified, refused by policy",
    "refused": "refused by France Travail (R001/R002)",
    "no_nir": "no NIR or birth date to search with",
    "rejected": "error: request found invalid (R997)",
    "ft_error": "error: France Travail in error (R998...)",
    "malformed": "error: malformed answer",
    "unavailable": "error: France Travail unavailable",
    "token_refused": "error: our client refused by the token endpoint",
}


def _client(settings: Any) -> Any:
    from app.clients.france_travail import FranceTravailClient

    if not settings.ft_configured:
        raise fail(
            "France Travail is not configured: set PASSERELLE_FT_AUTH_URL, PASSERELLE_FT_API_URL, "
            "PASSERELLE_FT_CLIENT_ID and PASSERELLE_FT_CLIENT_SECRET (README, 'France Travail')",
            ExitCode.ENVIRONMENT,
        )
    return FranceTravailClient(settings)


@ft_app.command("sync")
def ft_sync(
    departement: Annotated[str, typer.Option(help="Département, e.g. 055")],
    only_missing: Annotated[
        bool, typer.Option("--only-missing", help="Only persons without a definite identity search yet")
    ] = False,
    stale_days: Annotated[
        int | None, typer.Option(min=0, max=3650, help="Only persons without a successful exchange for N days")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most N persons in this run")] = None,
    budget: Annotated[
        float | None,
        typer.Option(
            min=1, max=86_400, help="Seconds this invocation may take: then it stops, resumable (the next run goes on)"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The summary as JSON on stdout")] = False,
) -> None:
    """Search every person the platform works on (an entry episode or an orientation) at France Travail,
    fetch their statut and diagnostic, store them; read France Travail's own orientations (lectureOrientation,
    its own token) and record them as dated facts (a DECIDE orients: "orienté par France Travail"). Reuses a
    valid jeton; resumable (kill it and run it again: it continues); one run per département at a time. Exit
    0 when every person ended with a definite outcome (found, unknown, ambiguous, refused) or --budget was
    spent (resumable), 1 when some ended in error (re-run to retry them) or France Travail refused its
    orientations (invalid_scope: only they), 3 when France Travail stayed unavailable or is not configured, 5
    when another run holds the lock, 130 on SIGTERM or Ctrl-C (within seconds, resumable)."""
    from app.db import get_engine
    from app.france_travail.sync import SyncOptions, SyncSummary, run_sync, stragglers

    settings = ready_settings()
    options = SyncOptions(validated_departement(departement), only_missing, stale_days, limit, budget)
    client = _client(settings)
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop cleanly, resumable
    progress = Progress(
        TextColumn("France Travail"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=as_json or not err_console.is_terminal,
    )
    task: list[Any] = []

    def started(summary: SyncSummary) -> None:
        total = summary.settled_before + summary.selected
        task.append(progress.add_task("sync", total=total, completed=summary.settled_before))
        if summary.resumed:
            err_console.print(
                f"resuming run {summary.run_id}: {summary.settled_before} persons already settled, "
                f"{summary.selected} to go",
                highlight=False,
            )

    try:
        with progress:
            summary = run_sync(
                get_engine(settings),
                settings,
                client,
                options,
                on_start=started,
                on_progress=lambda n: progress.advance(task[0], n),
            )
    finally:  # SyncBusy: exit 5 (app.cli.common.PasserelleGroup)
        signal.signal(signal.SIGTERM, previous)
        if not stragglers():
            client.close()
    if summary.orientations.get("decide") or summary.orientations.get("preconise"):
        from app.orientation.episodes import refresh_pending

        refresh_pending(get_engine(settings))  # France Travail's orientations recorded: their episodes
    _report(summary, as_json)
    _exit_for(summary, stragglers)


def _exit_for(summary: Any, stragglers: Any) -> None:
    """How a sync ends for cron: 130 interrupted (at once when calls still hang), 0 at its budget, 3 when
    France Travail refused our client or stayed unavailable, 1 when some persons ended in error."""
    if summary.stopped == "interrupted":
        err_console.print(f"interrupted: run {summary.run_id} resumes where it stopped when run again", highlight=False)
        if stragglers():  # calls to France Travail that do not answer: not waited for (issue #24 item 5)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        raise typer.Exit(130)
    if summary.stopped == "budget":
        err_console.print(
            f"time budget spent: run {summary.run_id} stopped, resumable; the next run goes on where it stopped",
            highlight=False,
        )
        return
    if summary.stopped and summary.stopped.startswith("token_refused"):
        raise fail(summary.stopped.removeprefix("token_refused: "), ExitCode.ENVIRONMENT)
    if summary.stopped:
        why = summary.stopped.removeprefix("france_travail_unavailable: ")
        raise fail(
            f"France Travail stayed unavailable ({why}): run {summary.run_id} stopped; check "
            "PASSERELLE_FT_AUTH_URL and PASSERELLE_FT_API_URL, then run the same command again to resume it",
            ExitCode.ENVIRONMENT,
        )
    if summary.orientation_blocked:
        raise fail(f"{summary.orientation_blocked} (check PASSERELLE_FT_SCOPES)", ExitCode.REJECTED)
    if not summary.definite:
        n = sum(summary.errors.values()) + sum(summary.orientation_errors.values())
        raise fail(f"{n} persons ended in error (codes above): the next run retries them", ExitCode.REJECTED)


def _report(summary: Any, as_json: bool) -> None:
    if as_json:
        print_json(summary.as_dict())
        return
    rows = [(OUTCOME_LABELS.get(k, k), v) for k, v in sorted(summary.outcomes.items(), key=lambda kv: -kv[1])]
    if summary.not_certified_used:
        rows.append(("  of which found, not certified (used, marked)", summary.not_certified_used))
    rows += [(f"  error code {code}", n) for code, n in sorted(summary.errors.items())]
    rows += [(f"France Travail orientation: {k}", n) for k, n in sorted(summary.orientations.items())]
    rows += [(f"  orientation error code {code}", n) for code, n in sorted(summary.orientation_errors.items())]
    if summary.orientation_blocked:
        rows.append((f"orientation blocked: {summary.orientation_blocked}", 0))
    console.print(
        f"run {summary.run_id}{' (resumed)' if summary.resumed else ''}: {summary.selected} persons in "
        f"{summary.seconds:.1f} s, {summary.calls} calls",
        highlight=False,
    )
    print_rows(("outcome", "persons"), rows)


@ft_app.command("push")
def ft_push(
    limit: Annotated[int | None, typer.Option(min=1, help="At most N decisions in this run")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Send the orientation decisions waiting in the outbox to France Travail (Orientation usager v1; only
    when PASSERELLE_FT_ORIENTATION_PUSH is on). Never sends one twice; exit 1 if some failed, 3 when France
    Travail stayed unavailable for every decision tried (they wait for the next run)."""
    from app.db import get_engine, session_scope
    from app.france_travail.outbox import outbox_counts, push_due

    settings = ready_settings()
    if not settings.ft_orientation_push:
        with session_scope(settings) as session:
            waiting = outbox_counts(session).get("pending", 0)
        raise fail(
            f"the orientation push is off (PASSERELLE_FT_ORIENTATION_PUSH=false); {waiting} decisions wait",
            ExitCode.USAGE,
        )
    client = _client(settings)
    down: list[str] = []
    try:
        counts = push_due(get_engine(settings), settings, client, limit=limit, unavailable=down)
    finally:
        client.close()
    with session_scope(settings) as session:
        queue = outbox_counts(session)
    if as_json:
        print_json({"this_run": counts, "outbox": queue})
    else:
        print_rows(("this run", "decisions"), sorted(counts.items()) or [("nothing due", 0)])
        print_rows(("outbox", "decisions"), sorted(queue.items()))
    answered = sum(n for result, n in counts.items() if result not in ("retry", "requeued"))
    if down and not answered and counts.get("retry", 0) == len(down):  # the environment, not the decisions
        raise fail(
            f"France Travail stayed unavailable ({down[0]}): {len(down)} decisions wait, the next run sends "
            "them; check PASSERELLE_FT_AUTH_URL and PASSERELLE_FT_API_URL",
            ExitCode.ENVIRONMENT,
        )
    if counts.get("failed"):
        raise fail(f"{counts['failed']} decisions failed (see the outbox: last_error)", ExitCode.REJECTED)


return_app = typer.Typer(
    help="France Travail's return file (Annexe 4, en retour).", no_args_is_help=True, rich_markup_mode=None
)
ft_app.add_typer(return_app, name="return-file")


@return_app.command("ingest")
def return_file_ingest(
    file: Annotated[Path, typer.Argument(help="The CSV France Travail sent back (; or , UTF-8 or Windows-1252)")],
    departement: Annotated[str, typer.Option(help="Département, e.g. 055")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Read France Travail's return file, match each line to a person (names + birth date + commune), store
    it dated; the same file twice changes nothing. Exit 1 when the file is rejected (the line and column
    are named) or when lines could not be matched (reported, never guessed)."""
    from app.db import session_scope
    from app.france_travail.return_file import ReturnFileRejected, prepare, store

    settings = ready_settings()
    code = validated_departement(departement)
    try:
        stream = file.open("rb")
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror}", ExitCode.USAGE) from None
    try:
        with stream:
            upload = prepare(stream)  # read and validated whole, as a stream, before the write lock
            with session_scope(settings, write=True) as session:
                report = store(session, settings, code, file.name, upload, "cli")
    except ReturnFileRejected as exc:
        raise fail(f"{file.name} rejected, nothing stored: {exc.message}") from None
    if as_json:
        print_json(report.to_dict())
    else:
        state = "already received (same content): nothing new" if report.duplicate else "stored"
        console.print(
            f"{file.name}: {state}; {report.rows} lines, {report.matched} matched, {report.ambiguous_count} "
            f"ambiguous, {report.unmatched_count} unmatched ({report.encoding}, separator {report.separator!r})",
            highlight=False,
        )
        problems = [(p["line"], "ambiguous", p["reason"]) for p in report.ambiguous]
        problems += [(p["line"], "unmatched", p["reason"]) for p in report.unmatched]
        if problems:
            print_rows(("line", "status", "why"), sorted(problems))
        if report.ignored_columns:
            err_console.print(f"columns ignored: {', '.join(report.ignored_columns)}", highlight=False)
    if report.ambiguous or report.unmatched:
        raise typer.Exit(int(ExitCode.REJECTED))
