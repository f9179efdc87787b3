"""`passerelle pilotage`: the indicators the Département steers with (annex 4)."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy import select

from app.cli.common import ExitCode, console, err_console, fail, parse_day, print_json, ready_settings

pilotage_app = typer.Typer(help="Pilotage indicators.", no_args_is_help=True)


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
    from app.db import get_engine
    from app.models import Departement
    from app.pilotage.orientation import FLAT_KEYS, orientation_indicator
    from app.services.episodes import pending_count
    from app.settings import today

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
        deps = departement or list(conn.execute(select(Departement.code).order_by(Departement.code)).scalars())
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
    elif output == "csv":
        print(";".join(["from", "to", "as_of", *FLAT_KEYS]))
        print(";".join(str(result[k]) for k in ("from", "to", "as_of", *FLAT_KEYS)))
    else:
        from app.pilotage.display import print_indicator

        print_indicator(result, console)
