"""`passerelle dashboard`: the way into the dashboard beside the identity provider (issue #26)."""

from __future__ import annotations

from typing import Annotated
from zoneinfo import ZoneInfo

import typer

from app.cli.common import ExitCode, err_console, fail, ready_settings, validated_departement

dashboard_app = typer.Typer(help="The dashboard in a browser.", no_args_is_help=True)


@dashboard_app.command("link")
def dashboard_link(
    departement: Annotated[str, typer.Option(help="The dashboard's département (e.g. 055).")],
    name: Annotated[str, typer.Option(help='Who will open the link ("Prénom Nom"): recorded with the session.')],
    minutes: Annotated[int, typer.Option(help="How long the link can be used, in minutes (1 to 1440).")] = 15,
    url: Annotated[
        str | None,
        typer.Option(help="The service's address (default: PASSERELLE_PUBLIC_URL, else http://127.0.0.1:8000)."),
    ] = None,
) -> None:
    """Print a single-use link that opens one département's dashboard for one person, for 8 hours
    (PASSERELLE_DASHBOARD_SESSION_HOURS). It can be used once, within --minutes; its creation and use are
    audited; the link is shown here only, never stored in clear.

    Example: passerelle dashboard link --departement 055 --name "Camille Martin" --minutes 15
    """
    from app.admin.departements import known_codes
    from app.admin.links import create_link, link_url
    from app.db import session_scope

    code = validated_departement(departement)
    settings = ready_settings()
    with session_scope(write=True) as session:
        known = known_codes(session)
        if code not in known:
            raise fail(f"unknown département {code!r}; known: {', '.join(known) or 'none'}", ExitCode.USAGE)
        try:
            created = create_link(session, settings, departement=code, name=name, minutes=minutes)
        except ValueError as exc:
            raise fail(str(exc), ExitCode.USAGE) from None
    base = url or settings.public_url or "http://127.0.0.1:8000"
    until = created.expires_at.astimezone(ZoneInfo(settings.business_timezone)).strftime("%d/%m/%Y %H:%M")
    err_console.print(f"single-use link for {' '.join(name.split())} (département {code}), usable until "
                      f"{until} ({settings.business_timezone}); open it in a browser:", highlight=False)  # fmt: skip
    print(link_url(base, created.token))
