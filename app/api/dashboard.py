"""The Département's dashboard in French (issue #15): `/tableau-de-bord?mois=AAAA-MM&as_of=AAAA-MM-JJ`, a page
rendered on the server from the pilotage tables (the API's numbers), for people (scope `pilotage:read`)."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import UTC, date, datetime
from html import escape
from typing import Annotated

import structlog
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.admin import links
from app.api import pages, refusals
from app.api.deps import Authorized, IsoDate, SessionDep, SettingsDep, aggregate_read
from app.clock import today
from app.db import write_transaction
from app.errors import PasserelleError, Unprocessable
from app.kit.validation import TEXT_PATTERN
from app.pilotage import dashboard
from app.pilotage.period import Period, PeriodError, month_of
from app.security import login
from app.security.auth import Principal, authenticate_bearer, require_scope
from app.security.scopes import Scope
from app.security.source import source_of
from app.settings import Settings

router = APIRouter(tags=["tableau de bord"])
FIRST_MONTH = date(1900, 12, 1)  # its twelve months start in January 1900
log = structlog.get_logger(__name__)


@router.get(
    "/tableau-de-bord",
    response_class=HTMLResponse,
    summary="Le tableau de bord du Département (HTML, en français)",
)
def tableau_de_bord(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, Authorized(Scope.pilotage_read)],
    mois: Annotated[
        str | None,
        Query(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="AAAA-MM (défaut : le dernier mois complet)"),
    ] = None,
    as_of: Annotated[IsoDate | None, Query(description="Faits connus à cette date (défaut : aujourd'hui)")] = None,
    departement: Annotated[str | None, Query(pattern=r"^(\d{3}|02[AB])?$")] = None,
) -> HTMLResponse:
    day = as_of or today(settings)
    try:
        month = Period.parse(mois or dashboard.last_complete_month(day))
    except PeriodError:
        raise Unprocessable(f"Mois impossible : {mois} (aucun mois avant 1900 ni après {day.year}).") from None
    if month.start < FIRST_MONTH:  # the page shows the twelve months up to the one asked, none before 1900
        raise Unprocessable(
            f"Le mois {month.label} est trop ancien : le tableau de bord montre les douze mois jusqu'à lui, "
            f"aucun avant 1900 (premier mois possible : {month_of(FIRST_MONTH)})."
        )
    if month.start > day:
        raise Unprocessable(f"Le mois {month.label} commence après le {day.strftime('%d/%m/%Y')}.")
    deps = principal.chosen_departements(departement or None)
    board = aggregate_read(
        request,
        session,
        lambda conn: dashboard.build(
            conn, deps, month, day, settings.pilotage_target_15_days, settings.pilotage_gap_days
        ),
    )
    html = dashboard.render(
        board, sorted(principal.departements), departement or None, settings.pilotage_target_15_days
    )
    return HTMLResponse(html)


@router.get("/connexion", include_in_schema=False)
def connexion(
    settings: SettingsDep, suite: Annotated[str | None, Query(max_length=500, pattern=TEXT_PATTERN)] = None
) -> Response:
    """Start the browser login (OIDC authorization code with PKCE) and come back to `suite` after it."""
    if not login.configured(settings):  # how to get in without one: a single-use link (issue #26)
        return HTMLResponse(pages.page("Connexion au tableau de bord", pages.how_to_get_in(False)))
    started = login.start(settings, suite)
    response = RedirectResponse(started.url, status_code=303)
    response.set_cookie(login.FLOW_COOKIE, started.cookie, max_age=login.FLOW_SECONDS, httponly=True,
                        secure=_secure(settings), samesite="lax", path="/connexion")  # fmt: skip
    return response


@router.get("/", include_in_schema=False)
def accueil() -> HTMLResponse:
    """A short French landing page: the dashboard and the API's documentation."""
    return HTMLResponse(pages.landing())


JETON = r"^[A-Za-z0-9_-]*$"


@router.get(links.PATH, include_in_schema=False)
def connexion_lien(
    jeton: Annotated[str | None, Query(max_length=200, pattern=JETON)] = None,
) -> HTMLResponse:
    """A single-use link (`passerelle dashboard link`) opened: a button that uses it. Opening the link uses
    nothing: a mail or chat client that fetches links to preview them cannot spend it."""
    form = (
        '<form method="post" action="/connexion/lien">'
        f'<input type="hidden" name="jeton" value="{escape(jeton or "")}">'
        '<button type="submit">Ouvrir le tableau de bord</button></form>'
    )
    return HTMLResponse(pages.page(
        "Lien de connexion au tableau de bord",
        "<p>Ce lien ouvre le tableau de bord pour 8 heures ; il ne sert qu'une fois.</p>" + form, back=False,
    ))  # fmt: skip


@router.post(links.PATH, include_in_schema=False)
def connexion_lien_utilise(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    jeton: Annotated[str | None, Form(max_length=200, pattern=JETON)] = None,
) -> Response:
    """The link's button: the link consumed, an 8-hour session on its département's dashboard opens for the
    person it names (audited as `dashboard.login`)."""
    sid = secrets.token_hex(16)
    source = source_of(request)
    try:
        with write_transaction(session):
            redeemed = links.redeem(session, settings, jeton, sid, source)
    except links.LinkRefused as exc:
        # like every refusal without a credential (issue #23): counted against the address; past its limit a
        # 429, recorded once a minute with the others, not one audit event per attempt
        wait = refusals.count_against_source(request)
        log.warning("browser_link_refused", reason=exc.detail.get("raison"), limited=bool(wait))
        if wait:
            refusals.record(request.scope, 429, "too_many_requests", principal_id=exc.principal,
                            action="dashboard.login", departement=exc.departement,
                            reason=str(exc.detail.get("raison")))  # fmt: skip
            text = pages.error_page(429, None, login.configured(settings))
            return HTMLResponse(text, status_code=429, headers={"Retry-After": str(wait)})
        exc.record(session.get_bind(), source)  # type: ignore[arg-type]
        return HTMLResponse(_login_failed(str(exc)), status_code=401)
    opened = login.open_link_session(settings, sid, redeemed.link_id, redeemed.departement, redeemed.name)
    response = RedirectResponse(f"/tableau-de-bord?departement={redeemed.departement}", status_code=303)
    response.set_cookie(login.SESSION_COOKIE, opened.cookie, max_age=opened.max_age,
                        expires=datetime.fromtimestamp(opened.expires, UTC),
                        httponly=True, secure=_secure(settings), samesite="lax", path="/")  # fmt: skip
    log.info("browser_login", principal=f"lien:{redeemed.link_id}")
    return response


@router.get("/connexion/retour", include_in_schema=False)
def connexion_retour(
    request: Request,
    settings: SettingsDep,
    code: Annotated[str | None, Query(max_length=2000, pattern=TEXT_PATTERN)] = None,
    state: Annotated[str | None, Query(max_length=200, pattern=TEXT_PATTERN)] = None,
    error: Annotated[str | None, Query(max_length=200, pattern=TEXT_PATTERN)] = None,
) -> Response:
    """The identity provider sends the person back here: the code becomes a session, then the page asked."""
    if error:
        return HTMLResponse(_login_failed("Le fournisseur d'identité a refusé la connexion."), status_code=401)
    try:
        token, next_url = login.finish(settings, code, state, request.cookies.get(login.FLOW_COOKIE))
        principal = authenticate_bearer(request.app.state.oidc, settings, token)
        require_scope(principal, Scope.pilotage_read)
    except login.LoginError as exc:
        return HTMLResponse(_login_failed(str(exc)), status_code=401)
    except PasserelleError as exc:
        log.warning("browser_login_refused", error=exc.code)
        return HTMLResponse(
            _login_failed("Votre compte n'a pas accès au tableau de bord."), status_code=exc.status_code
        )
    opened = login.open_session(settings, token, jwt_expiry(token))
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(login.SESSION_COOKIE, opened.cookie, max_age=opened.max_age,
                        expires=datetime.fromtimestamp(opened.expires, UTC),  # an int would be a delta (2083)
                        httponly=True, secure=_secure(settings), samesite="lax", path="/")  # fmt: skip
    response.delete_cookie(login.FLOW_COOKIE, path="/connexion")
    log.info("browser_login", principal=principal.id)
    return response


@router.get("/deconnexion", include_in_schema=False)
def deconnexion(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    """End the session on the server (a copy of the cookie opens nothing any more), then forget the cookie."""
    with write_transaction(session):
        ended = login.end_session(settings, session, request.cookies.get(login.SESSION_COOKIE))
    if ended:
        log.info("browser_logout")
    response = HTMLResponse(_login_failed("Vous êtes déconnecté.", title="Déconnexion"))
    response.delete_cookie(login.SESSION_COOKIE, path="/", secure=_secure(settings), httponly=True, samesite="lax")
    return response


def _secure(settings: Settings) -> bool:
    return login.secure_cookies(settings)


def jwt_expiry(token: str) -> float:
    """The `exp` of a JWT already verified (the cookie lives no longer than the token)."""

    payload = token.split(".")[1]
    return float(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])


def _login_failed(message: str, title: str = "Connexion impossible") -> str:

    return (
        f'<!DOCTYPE html><html lang="fr"><head><meta charset="utf-8"><title>{escape(title)} — Passerelle RSA</title>'
        f'<link rel="stylesheet" href="/static/tableau-de-bord.css"></head><body><main><h1>{escape(title)}</h1>'
        f'<p>{escape(message)}</p><p><a href="/connexion">Se connecter</a> · <a href="/">Accueil</a></p></main>'
        "</body></html>"
    )
