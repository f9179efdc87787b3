"""The dashboard in a real browser (issue #15): Debian's Chromium, headless, driven by Playwright (no browser
download). The page renders, shows the API's numbers in French, every table is reached with the keyboard,
nothing is loaded from elsewhere, no script runs; a screenshot is kept in `test-artifacts/`.

Chromium is a Debian package (`.ci/run` installs it when missing): without it this test fails, it does not
skip (set PASSERELLE_BROWSER to another Chromium's path)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.support.live_server import LiveServer

CHROMIUM = os.environ.get("PASSERELLE_BROWSER") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _french(value: float) -> str:
    return f"{value * 100:.1f} %".replace(".", ",")


def test_the_dashboard_in_headless_chromium(app, client, make_api_key, scene):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"Chromium is needed at {CHROMIUM} (apt-get install chromium)"
    key = make_api_key(["pilotage:read"])
    month = scene["d"].strftime("%Y-%m")
    as_of = scene["as_of"].isoformat()
    api = client.get(f"/api/v1/pilotage/tables/delais-orientation?periode={month}&as_of={as_of}&par=organisme",
                     headers={"X-API-Key": key}).json()  # fmt: skip
    expected = {f["indicateur"]: f["valeur"] for f in api["figures"] if f["dimension"] == "ensemble"}
    requests: list[str] = []
    ARTIFACTS.mkdir(exist_ok=True)
    with LiveServer(app) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = browser.new_context(extra_http_headers={"X-API-Key": key}, locale="fr-FR",
                                          viewport={"width": 1280, "height": 900})  # fmt: skip
            page = context.new_page()
            page.on("request", lambda r: requests.append(r.url))
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            answer = page.goto(f"{base}/tableau-de-bord?mois={month}&as_of={as_of}")
            assert answer is not None and answer.status == 200
            assert page.locator("html").get_attribute("lang") == "fr"
            assert "Tableau de bord" in page.title()
            shown = {page.locator("dt").nth(i).inner_text(): page.locator("dd .valeur").nth(i).inner_text()
                     for i in range(page.locator("dt").count())}  # fmt: skip
            assert shown["Nouveaux entrants"] == str(expected["nouveaux_entrants"])
            assert shown["Orientés en 15 jours ou moins"] == _french(expected["taux_15j"])
            assert shown["Orientés en un mois ou moins"] == _french(expected["taux_1mois"])
            assert shown["Délai moyen d'orientation"] == f"{expected['delai_moyen_jours']:g} jours".replace(".", ",")
            assert shown["En attente d'orientation"] == str(expected["en_attente"])
            text = page.locator("main").inner_text()
            assert "orientes_15j" not in text and "taux_15j" not in text and "nouveaux_entrants" not in text
            assert page.locator("svg").count() >= 5  # the charts, drawn on the server
            # the keyboard reaches every table (RGAA: each chart's alternative)
            tables = set(page.locator("table[data-table]").evaluate_all("ts => ts.map(t => t.dataset.table)"))
            assert len(tables) >= 7
            reached: set[str] = set()
            for _ in range(80):
                page.keyboard.press("Tab")
                focused = page.evaluate(
                    "() => { const t = document.activeElement.querySelector('table[data-table]');"
                    " return t ? t.dataset.table : null; }"
                )
                if focused:
                    reached.add(focused)
            assert reached == tables, tables - reached
            page.screenshot(path=str(ARTIFACTS / "tableau-de-bord.png"), full_page=True)
            assert not errors, errors
        finally:
            browser.close()
    host = urlparse(base).netloc
    assert requests and all(urlparse(u).netloc == host for u in requests), requests  # no CDN, nothing outside
    assert (ARTIFACTS / "tableau-de-bord.png").stat().st_size > 10_000


def test_the_dashboard_refuses_without_credentials_and_checks_its_parameters(client, make_api_key):
    assert client.get("/tableau-de-bord").status_code == 401
    key = make_api_key(["persons:read"])
    assert client.get("/tableau-de-bord", headers={"X-API-Key": key}).status_code == 403
    reader = make_api_key(["pilotage:read"])
    assert client.get("/tableau-de-bord?mois=2024-13", headers={"X-API-Key": reader}).status_code == 422
    assert client.get("/tableau-de-bord?mois=2999-01", headers={"X-API-Key": reader}).status_code == 422
    assert client.get("/tableau-de-bord?departement=054", headers={"X-API-Key": reader}).status_code == 404
    page = client.get("/tableau-de-bord", headers={"X-API-Key": reader})
    assert page.status_code == 200 and "script-src 'none'" in page.headers["content-security-policy"]
    assert "<script" not in page.text


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _login_settings(db, idp_base: str, port: int):
    from pydantic import SecretStr

    from tests.support.fake_idp import SECRET

    return db.model_copy(update={
        "oidc_authorization_endpoint": f"{idp_base}/authorize", "oidc_token_endpoint": f"{idp_base}/token",
        "oidc_client_id": "passerelle-tableau-de-bord", "oidc_client_secret": SecretStr(SECRET),
        "public_url": f"http://127.0.0.1:{port}",
    })  # fmt: skip


def test_a_person_logs_in_through_the_identity_provider_in_the_browser(db, make_token, scene):
    """Behind the OIDC login: the browser is sent to the provider, comes back with a code, gets a session
    cookie (HttpOnly) and sees the dashboard; the cookie never authenticates the API."""
    import httpx
    from playwright.sync_api import sync_playwright

    from app.main import create_app
    from tests.support.fake_idp import fake_idp

    idp = fake_idp(make_token, roles=["passerelle-data-scientist"])
    port = _free_port()
    with LiveServer(idp) as idp_base:
        app = create_app(_login_settings(db, idp_base, port))
        with LiveServer(app, port=port) as base, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = browser.new_context(locale="fr-FR").new_page()
                month = scene["d"].strftime("%Y-%m")
                answer = page.goto(f"{base}/tableau-de-bord?mois={month}&as_of={scene['as_of']}")
                assert answer is not None and answer.status == 200, answer and answer.status
                assert page.url.startswith(f"{base}/tableau-de-bord?mois={month}")  # back where the person asked
                assert page.locator("dd .valeur").first.inner_text() == "4"  # the scene's four nouveaux entrants
                cookies = {c["name"]: c for c in page.context.cookies()}
                session = cookies["passerelle_session"]
                assert session["httpOnly"] and session["sameSite"] == "Lax"
                # the same cookie does not open the API
                api = httpx.get(f"{base}/api/v1/pilotage/tables", cookies={"passerelle_session": session["value"]})
                assert api.status_code == 401
                page.goto(f"{base}/deconnexion")
                assert "passerelle_session" not in {c["name"] for c in page.context.cookies()}
            finally:
                browser.close()
        assert idp.state.tokens_issued == 1


def test_login_refusals_are_said_in_french_and_let_nothing_in(db, make_token):
    import httpx

    from app.main import create_app
    from tests.support.fake_idp import fake_idp

    idp = fake_idp(make_token, roles=["passerelle-auditor"])  # a role without pilotage:read
    port = _free_port()
    with LiveServer(idp) as idp_base:
        settings = _login_settings(db, idp_base, port)
        with LiveServer(create_app(settings), port=port) as base:
            with httpx.Client(follow_redirects=True) as c:
                refused = c.get(f"{base}/tableau-de-bord")
                assert refused.status_code == 403 and "pas accès au tableau de bord" in refused.text
                assert "passerelle_session" not in c.cookies
            with httpx.Client() as c:
                first = c.get(f"{base}/tableau-de-bord")
                assert first.status_code == 303 and first.headers["location"].startswith("/connexion?suite=")
                # a forged state, a missing flow cookie, a tampered session cookie
                forged = c.get(f"{base}/connexion/retour?code=x&state=forged")
                assert forged.status_code == 401 and "recommencez" in forged.text
                c.cookies.set("passerelle_session", "tampered")
                again = c.get(f"{base}/tableau-de-bord")
                assert again.status_code == 303
                outside = c.get(f"{base}/connexion?suite=https://evil.example/x")
                assert outside.status_code == 303
    from app.security.login import safe_next

    assert (
        safe_next("https://evil.example/x") == "/tableau-de-bord" and safe_next("//evil.example") == "/tableau-de-bord"
    )
    assert safe_next("/tableau-de-bord?mois=2024-03") == "/tableau-de-bord?mois=2024-03"


def test_dates_far_in_the_past_are_refused_clearly(client, make_api_key):
    """Schemathesis found a 500: `as_of=0467-12-27` (strftime wrote the year on three digits)."""
    key = make_api_key(["pilotage:read"])
    for url in ("/tableau-de-bord?as_of=0467-12-27", "/tableau-de-bord?as_of=0001-03-02",
                "/api/v1/pilotage/tables/transmission?periode=0467"):  # fmt: skip
        r = client.get(url, headers={"X-API-Key": key})
        assert r.status_code == 422 and "1900" in r.json()["message"], (url, r.text)
