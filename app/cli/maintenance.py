"""`passerelle purge` and `passerelle keys rotate`: retention and key rotation (issue #14), run by cron or an
operator; both audited, both one run at a time, both resumable."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.common import ExitCode, err_console, fail, print_json, print_rows, ready_settings


def register(app: typer.Typer) -> None:
    app.command("purge")(purge_command)
    app.add_typer(keys_app, name="keys")


def purge_command(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would go; change nothing")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Remove what is past its retention: persons whose right closed long ago (PASSERELLE_PERSON_RETENTION_MONTHS,
    24), France Travail jetons past expiry and old call traces, raw webhook bodies, expired export files,
    quarantined flux files, audit events past PASSERELLE_AUDIT_RETENTION_DAYS (365). Prints counts, never the
    data; recorded in the audit trail. Exit 5 if another purge runs."""
    from rich.progress import Progress

    from app.admin.purge import purge
    from app.db import get_engine
    from app.exports.publish import lease

    settings = ready_settings()
    engine = get_engine(settings)
    # another purge running (ExportBusy): exit 5 (app.cli.common.PasserelleGroup)
    with lease(settings, "purge", "all"), Progress(console=err_console, transient=True) as bar:
        task = bar.add_task("persons past retention", total=None)
        report = purge(engine, settings, dry_run=dry_run, progress=lambda n: bar.advance(task, n))
    if as_json:
        print_json({"dry_run": report.dry_run, "cutoffs": report.cutoffs, "counts": report.counts})
        return
    print_rows(("what", "rows or files" if not dry_run else "would go"), sorted(report.counts.items()))
    for name, day in report.cutoffs.items():
        print(f"{name}: {day}")
    if dry_run:
        print("dry run: nothing was changed")


keys_app = typer.Typer(
    help="Encryption and seal keys: what each key id protects, and re-encryption under the first one.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@keys_app.command("status")
def keys_status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """For each kind (nir, export, audit): the key in use now and how many values each key id protects."""
    from app.admin.keys import status
    from app.db import get_engine

    settings = ready_settings()
    result = status(get_engine(settings), settings)
    if as_json:
        print_json(result)
        return
    rows = [(kind, info["active"], key_id, n) for kind, info in result.items()
            for key_id, n in sorted(info["values_by_key"].items())] or [("-", "-", "-", 0)]  # fmt: skip
    print_rows(("kind", "active key", "key id", "values"), rows)


@keys_app.command("rotate")
def keys_rotate(
    kind: Annotated[str, typer.Argument(help="nir, export or audit")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Re-encrypt what older keys protect under the first key of the setting (put the new key first, keep
    the old ones after it until this has run). Online and resumable: run it again after an interruption.
    Audited. Exit 5 while another rotation of the same kind runs."""
    from rich.progress import Progress

    from app.admin.keys import KINDS, RotationError, rotate_export, rotate_nir
    from app.audit.chain import record_action_now
    from app.db import get_engine
    from app.exports.publish import lease

    if kind not in KINDS:
        raise fail(f"KIND is one of {', '.join(KINDS)}", ExitCode.USAGE)
    settings = ready_settings()
    engine = get_engine(settings)
    counts: dict[str, int] = {}
    try:
        with lease(settings, "keys rotate", kind), Progress(console=err_console, transient=True) as bar:
            task = bar.add_task(f"re-encrypting ({kind})", total=None)
            if kind == "nir":
                counts = rotate_nir(engine, settings, lambda n: bar.advance(task, n))
            elif kind == "export":
                counts = rotate_export(engine, settings, lambda n: bar.advance(task, n))
    except RotationError as exc:
        record_action_now(engine, "job:keys rotate", f"keys.rotate.{kind}", None, outcome="error",
                          detail={"error": str(exc)[:200]})  # fmt: skip
        raise fail(str(exc), ExitCode.ENVIRONMENT) from None
    record_action_now(engine, "job:keys rotate", f"keys.rotate.{kind}", None, detail=counts)
    if as_json:
        print_json({"kind": kind, "rewritten": counts})
    elif kind == "audit":
        print(f"nothing to rewrite: new events are sealed with {settings.audit_key_ring[0][0]}; keep the older "
              "keys in PASSERELLE_AUDIT_KEYS while the events they sealed are kept")  # fmt: skip
    else:
        print_rows(("table", "rewritten"), sorted(counts.items()))
