"""`passerelle pilotage`: the indicators the Département steers with (annex 4)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli.common import (
    ExitCode,
    chosen_departements,
    console,
    err_console,
    fail,
    parse_day,
    print_json,
    print_rows,
    ready_settings,
)

pilotage_app = typer.Typer(help="Pilotage indicators.", no_args_is_help=True, rich_markup_mode=None)


@pilotage_app.command("orientation")
def pilotage_orientation(
    start: Annotated[str, typer.Option("--from", help="First T0 day (YYYY-MM-DD)")],
    end: Annotated[str, typer.Option("--to", help="Last T0 day (YYYY-MM-DD)")],
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Count facts dated on or before (default: today)")
    ] = None,
    departement: Annotated[list[str] | None, typer.Option(help="Département(s) (default: all)")] = None,
    output: Annotated[str, typer.Option("--format", help="json, csv or table")] = "table",
) -> None:
    """Nouveaux entrants and their orientation within 15 days / one month (annex 4, indicators 1 and 2)."""
    from app.admin.departements import known_codes
    from app.clock import today
    from app.db import get_engine
    from app.orientation.episodes import pending_count
    from app.pilotage.indicator import orientation_indicator

    if output not in ("json", "csv", "table"):
        raise fail("--format is json, csv or table", ExitCode.USAGE)
    day_from, day_to = parse_day(start, "--from"), parse_day(end, "--to")
    assert day_from is not None and day_to is not None
    if day_to < day_from:
        raise fail("--to is before --from", ExitCode.USAGE)
    settings = ready_settings()
    day = parse_day(as_of, "--as-of") or today(settings)
    engine = get_engine(settings)
    with engine.connect() as conn:
        deps = departement or known_codes(conn)
    with engine.connect() as conn:
        result = orientation_indicator(conn, deps, day_from, day_to, day)
        pending = pending_count(conn)
    if pending:
        err_console.print(
            f"[yellow]warning:[/] {pending} person(s) wait for their entry episodes to be recomputed "
            "(a refresh failed or runs now): run `passerelle episodes refresh` for exact figures"
        )
    if output == "json":
        print_json(result)
    elif output == "csv":  # the table delais-orientation in long form: the API's bytes (issue #15)
        from app.pilotage.tables import DIMENSIONS, Period, compute, to_csv

        with engine.connect() as conn:
            names, territories = _communes(settings, conn, deps)
            period = Period.days(day_from, day_to)
            table = compute(conn, "delais-orientation", deps, period, day, DIMENSIONS, territories)
        sys.stdout.buffer.write(to_csv(table, "fr", names))
        sys.stdout.flush()
    else:
        from app.pilotage.display import print_indicator

        print_indicator(result, console)


def _period_and_day(periode: str | None, start: str | None, end: str | None, as_of: str | None) -> tuple[Any, Any]:
    from app.clock import today
    from app.pilotage.tables import Period, PeriodError
    from app.settings import get_settings

    try:
        period = Period.parse(periode, parse_day(start, "--from"), parse_day(end, "--to"))
    except PeriodError as exc:
        raise fail(f"--periode: {exc}", ExitCode.USAGE) from None
    return period, parse_day(as_of, "--as-of") or today(get_settings())


@pilotage_app.command("tables")
def pilotage_tables() -> None:
    """The pilotage tables there are (`passerelle pilotage table NAME`)."""
    from app.pilotage.tables import TITLES

    print_rows(("table", "titre"), list(TITLES.items()))


@pilotage_app.command("table")
def pilotage_table(
    name: Annotated[
        str,
        typer.Argument(
            help="nouveaux-entrants, delais-orientation, absents-rdv, transmission, "
            "stock-oarsa, completude-volet3, statut-france-travail, contrats-engagement, delai-legal"
        ),
    ],
    periode: Annotated[str | None, typer.Option(help="2024-03 (mois), 2024-W10, 2024-T1, 2024")] = None,
    start: Annotated[str | None, typer.Option("--from", help="First day of a custom period (YYYY-MM-DD)")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Last day of a custom period")] = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Facts dated on or before (default: today)")] = None,
    departement: Annotated[str | None, typer.Option(help="Département (default: all)")] = None,
    par: Annotated[list[str] | None, typer.Option(help="Breakdown(s) (default: all): organisme, sexe...")] = None,
    output: Annotated[str, typer.Option("--format", help="table, json or csv")] = "table",
    locale: Annotated[str, typer.Option(help="CSV: fr (decimal comma, jj/mm/aaaa) or c (machine)")] = "fr",
) -> None:
    """A pilotage table, in French: the whole and each breakdown. CSV in long form (one line per figure), the
    same bytes as the API's."""
    from app.db import get_engine
    from app.pilotage.tables import DIMENSIONS, TABLES, compute, to_csv, value_label
    from app.pilotage.tables import LABELS as L

    if name not in TABLES:
        raise fail(f"no table {name!r}: {', '.join(TABLES)}", ExitCode.USAGE)
    if output not in ("table", "json", "csv") or locale not in ("fr", "c"):
        raise fail("--format is table, json or csv; --locale fr or c", ExitCode.USAGE)
    unknown = sorted(set(par or ()) - set(DIMENSIONS))
    if unknown:
        raise fail(f"--par: unknown breakdown(s) {', '.join(unknown)}: {', '.join(DIMENSIONS)}", ExitCode.USAGE)
    period, day = _period_and_day(periode, start, end, as_of)
    settings = ready_settings()
    deps = list(chosen_departements(departement))
    with get_engine(settings).connect() as conn:
        names, territories = _communes(settings, conn, deps)
        result = compute(conn, name, deps, period, day, tuple(par or DIMENSIONS), territories,
                         settings.pilotage_gap_days)  # fmt: skip
    if output == "json":
        print_json(result.as_dict(names))
    elif output == "csv":
        sys.stdout.buffer.write(to_csv(result, locale, names))
        sys.stdout.flush()
    else:
        from rich.table import Table as RichTable

        shown = RichTable(title=f"{result.title} — période {period.label}, faits connus au {day.strftime('%d/%m/%Y')}")
        shown.add_column("Indicateur", overflow="fold")
        shown.add_column("Ventilation", overflow="fold")
        shown.add_column("Valeur", justify="right", no_wrap=True)
        for i, d, k, v in result.figures:
            where = "Ensemble" if d == "ensemble" else f"{L.get(d, d)} : {value_label(d, k, names)}"
            shown.add_row(L.get(i, i), where, _french(v, percent=i.startswith(("taux", "part"))))
        console.print(shown)
        for note in result.notes:
            console.print(note)


def _french(value: Any, percent: bool = False) -> str:
    """A figure as French staff read it: 45,3 %, 10,6, 01/09/2026; '-' when there is none."""
    from app.pilotage.tables import french_cell

    if percent and isinstance(value, float):
        return f"{value * 100:.1f} %".replace(".", ",")
    return french_cell(value) or "-"


@pilotage_app.command("extract")
def pilotage_extract(
    out: Annotated[Path, typer.Option("--output", "-o", help="File to write (CSV or JSON lines)")],
    periode: Annotated[str | None, typer.Option(help="2024-03, 2024-W10, 2024-T1, 2024")] = None,
    start: Annotated[str | None, typer.Option("--from")] = None,
    end: Annotated[str | None, typer.Option("--to")] = None,
    as_of: Annotated[str | None, typer.Option("--as-of")] = None,
    departement: Annotated[str | None, typer.Option()] = None,
    output: Annotated[str, typer.Option("--format", help="csv or jsonl")] = "csv",
) -> None:
    """The pseudonymised extract for analysis (no name, NIR, address, exact birth date or contact): one line per
    entry episode, ids stable for one PASSERELLE_EXTRACT_KEY. Recorded in the audit trail."""
    from rich.progress import Progress

    from app.db import get_engine, session_scope
    from app.persons.repository import audit_job_reads
    from app.pilotage import extract
    from app.settings import ConfigurationError

    if output not in ("csv", "jsonl"):
        raise fail("--format is csv or jsonl", ExitCode.USAGE)
    period, day = _period_and_day(periode, start, end, as_of)
    settings = ready_settings()
    try:
        key = settings.extract_key_bytes
    except ConfigurationError as exc:
        raise fail(str(exc), ExitCode.ENVIRONMENT) from None
    deps = list(chosen_departements(departement))
    with session_scope(settings) as session:
        audit_job_reads(session, "pilotage extract", "pilotage.extract", [(None, d) for d in deps])
    n = 0
    progress = Progress(console=err_console, transient=True)
    with get_engine(settings).connect() as conn, out.open("wb") as target, progress as bar:
        task = bar.add_task("extract", total=None)

        def counted() -> Any:
            nonlocal n
            for item in extract.rows(conn, key, deps, period, day):
                n += 1
                if n % 5000 == 0:
                    bar.update(task, completed=n)
                yield item

        for chunk in extract.as_csv(counted()) if output == "csv" else extract.as_jsonl(counted()):
            target.write(chunk)
    err_console.print(f"{n} line(s) written to {out}")


@pilotage_app.command("absences")
def pilotage_absences(
    periode: Annotated[str | None, typer.Option(help="RDV datés en : 2024-03, 2024-W10, 2024-T1, 2024")] = None,
    start: Annotated[str | None, typer.Option("--from", help="First RDV day of a custom period (YYYY-MM-DD)")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Last RDV day of a custom period")] = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Events dated on or before (default: today)")] = None,
    departement: Annotated[str | None, typer.Option(help="Département (default: all)")] = None,
    output: Annotated[str, typer.Option("--format", help="table, json or csv")] = "table",
) -> None:
    """Les rendez-vous d'orientation et d'accompagnement manqués ou excusés de la période, par personne (type,
    date, structure, excusé, revu depuis) : pour vérifier un dossier de sanction, après que la personne a été
    entendue. Rien d'automatique, rien n'est envoyé. Données nominatives : inscrit au journal des accès."""
    from app.db import get_engine, session_scope
    from app.persons.repository import audit_job_reads
    from app.pilotage import absences

    if output not in ("table", "json", "csv"):
        raise fail("--format is table, json or csv", ExitCode.USAGE)
    period, day = _period_and_day(periode, start, end, as_of)
    settings = ready_settings()
    deps = list(chosen_departements(departement))
    with get_engine(settings).connect() as conn:
        items = absences.missed_rdvs(conn, deps, period, day)
    with session_scope(settings) as session:  # a read of named persons: one audit row per person listed
        listed = sorted({(m.person_id, m.departement) for m in items})
        audit_job_reads(session, "pilotage absences", "pilotage.absents_rdv", [(pid, d) for pid, d in listed])
    if output == "json":
        print_json({"periode": period.label, "as_of": day.isoformat(), "departements": deps, "total": len(items),
                    "items": [absences.as_dict(m) for m in items]})  # fmt: skip
    elif output == "csv":
        for chunk in absences.as_csv(items):
            sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
    else:
        rows = [
            [
                m.person_id,
                f"{m.nom or ''} {m.prenom or ''}".strip(),
                absences.KIND_LABELS[m.kind],
                m.on.strftime("%d/%m/%Y"),
                m.structure,
                "oui" if m.excused else "non",
                m.seen_again_on.strftime("%d/%m/%Y") if m.seen_again_on else "non revu",
            ]
            for m in items
        ]
        print_rows(("personne", "nom", "rendez-vous", "date", "structure", "excusé", "revu depuis le"), rows)
        console.print(
            f"{len(items)} rendez-vous manqué(s) ou excusé(s), période {period.label}, faits connus au "
            f"{day.strftime('%d/%m/%Y')}. Rien n'est décidé ni envoyé : à vérifier avant toute suite."
        )


def _communes(settings: Any, conn: Any, deps: list[str]) -> tuple[dict[str, str], dict[str, str] | None]:
    """The commune names and territories; a bad Département table is an environment problem (exit 3)."""
    from app.pilotage.tables import commune_table

    return commune_table(settings, conn, deps)  # CommunesFileError: exit 3 (app.cli.common.PasserelleGroup)
