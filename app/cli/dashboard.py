"""`passerelle dashboard`: the way into the dashboard beside the identity provider (issue #26)."""

from __future__ import annotations

from typing import Annotated
from zoneinfo import ZoneInfo

import typer

from app.cli.common import ExitCode, err_console, fail, ready_settings, validated_departement

dashboard_app = typer.Typer(help="Le tableau de bord dans un navigateur.", no_args_is_help=True)


@dashboard_app.command("link")
def dashboard_link(
    departement: Annotated[str, typer.Option(help="Le département du tableau de bord (ex. 055).")],
    name: Annotated[str, typer.Option(help="La personne qui ouvrira le lien (« Prénom Nom »).")],
    minutes: Annotated[int, typer.Option(help="Validité du lien, en minutes (1 à 1440).")] = 15,
    url: Annotated[
        str | None,
        typer.Option(help="L'adresse du service (défaut : PASSERELLE_PUBLIC_URL, sinon http://127.0.0.1:8000)."),
    ] = None,
) -> None:
    """Un lien à usage unique qui ouvre le tableau de bord d'un département pour une personne, pendant
    8 heures (PASSERELLE_DASHBOARD_SESSION_HOURS) ; il est valable --minutes et sert une fois. Sa création et
    son usage sont enregistrés dans le journal d'audit ; le lien n'est affiché qu'ici.

    Exemple : passerelle dashboard link --departement 055 --name "Camille Martin" --minutes 15
    """
    from app.admin.departements import known_codes
    from app.admin.links import create_link, link_url
    from app.db import session_scope

    code = validated_departement(departement)
    settings = ready_settings()
    with session_scope(write=True) as session:
        known = known_codes(session)
        if code not in known:
            raise fail(f"département {code} inconnu ; connus : {', '.join(known) or 'aucun'}", ExitCode.USAGE)
        try:
            created = create_link(session, settings, departement=code, name=name, minutes=minutes)
        except ValueError as exc:
            raise fail(str(exc), ExitCode.USAGE) from None
    base = url or settings.public_url or "http://127.0.0.1:8000"
    until = created.expires_at.astimezone(ZoneInfo(settings.business_timezone)).strftime("%d/%m/%Y %H:%M")
    err_console.print(f"Lien à usage unique pour {' '.join(name.split())} (département {code}), valable "
                      f"jusqu'au {until} ; à ouvrir dans un navigateur :", highlight=False)  # fmt: skip
    print(link_url(base, created.token))
