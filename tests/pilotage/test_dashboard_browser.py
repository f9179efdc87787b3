"""The dashboard in a real browser (issue #15): Debian's Chromium, headless, driven by Playwright (no browser
download). The page renders, shows the API's numbers in French, every table is reached with the keyboard,
nothing is loaded from elsewhere, no script runs; a screenshot is kept in `test-artifacts/`.

Chromium is a Debian package (`.ci/run` installs it when missing): without it this test fails, it does not
skip (set PASSERELLE_BROWSER to another Chromium's path)."""

from __future__ import annotations

import os
import re
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


def _demo_env(settings, assignments: dict[str, str]) -> dict[str, str]:
    """The environment of a terminal where the demo ran: its settings (keys, pepper, data directory), then
    what the printed command sets; this worktree's code first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSERELLE_") and "proxy" not in k.lower()}
    for name in ("data_dir", "nir_encryption_keys", "nir_hmac_key", "api_key_pepper"):
        value = getattr(settings, name)
        env[f"PASSERELLE_{name.upper()}"] = str(
            value.get_secret_value() if hasattr(value, "get_secret_value") else value
        )
    env["PASSERELLE_ENV"] = "test"
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    env.update(assignments)
    return env


def _printed_command(output: str, marker: str) -> tuple[dict[str, str], list[str]]:
    """A command line the demo printed: its `NAME=value` assignments and its arguments."""
    import shlex

    (line,) = [li for li in output.splitlines() if marker in li]
    words = shlex.split(line)
    assignments = dict(w.split("=", 1) for w in words if re.match(r"^[A-Z_]+=", w))
    return assignments, [w for w in words if not re.match(r"^[A-Z_]+=", w)]


@pytest.mark.slow
def test_the_demos_printed_instructions_open_the_dashboard_in_chromium(db, tmp_path):
    """Issue #26: from a fresh database, the demo's last lines are followed as printed (serve, then the link
    command), and the link opens the dashboard in Chromium: on the last complete month, "provisoire" where it
    applies; the pages a browser meets when refused are French HTML with a way back."""
    import io
    import subprocess
    import time
    from datetime import timedelta

    import httpx
    from playwright.sync_api import sync_playwright
    from rich.console import Console

    from app.clock import today
    from app.demo import run_demo

    settings = db.model_copy(update={"data_dir": tmp_path})
    port = _free_port()
    out = io.StringIO()
    run_demo(settings, foyers=300, days=20, port=port, console=Console(file=out, width=400))
    printed = out.getvalue()
    assert f"--port {port}" in printed and "/docs" in printed
    serve_env, serve = _printed_command(printed, " serve --port")
    link_env, link = _printed_command(printed, " dashboard link ")
    assert serve[0].endswith("passerelle") and link[0] == serve[0] and serve_env == link_env
    assert serve_env["PASSERELLE_DATABASE_URL"].endswith("/demo/demo.db")
    server = subprocess.Popen(serve, env=_demo_env(settings, serve_env), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(150):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise AssertionError("the demo's server did not start")
        done = subprocess.run(link, env=_demo_env(settings, link_env), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        url = done.stdout.strip()
        assert url.startswith(f"{base}/connexion/lien?jeton=") and url not in done.stderr
        day = today(settings)  # the last complete month: the one before today's (today's if today is its last day)
        first = (day + timedelta(days=1)).replace(day=1)
        complete = (first - timedelta(days=1)).replace(day=1)
        expected = f"{MONTH_NAMES[complete.month - 1]} {complete.year}"
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                context = browser.new_context(locale="fr-FR", viewport={"width": 1280, "height": 900})
                page = context.new_page()
                assert page.goto(url) is not None  # the link shows a button (a preview spends nothing)
                with page.expect_navigation():
                    page.get_by_role("button", name="Ouvrir le tableau de bord").click()
                assert urlparse(page.url).path == "/tableau-de-bord"
                assert expected in page.locator("header").inner_text(), page.locator("header").inner_text()
                first_tile = page.locator("dl.chiffres > div").first
                assert first_tile.locator("dt").inner_text() == "Nouveaux entrants"
                assert int(first_tile.locator(".valeur").inner_text()) > 0  # the demo's data
                # persons of that month are still inside their one-month deadline today (the demo's last days)
                assert first_tile.locator(".provisoire").inner_text() == "provisoire"
                assert "T0 le 01/03" in page.locator("main").inner_text()  # how the 15 days are counted
                page.screenshot(path=str(ARTIFACTS / "tableau-de-bord-lien.png"), full_page=True)
                # the link served once: opened again, a French page says so
                page.goto(url)
                with page.expect_navigation() as spent:
                    page.get_by_role("button", name="Ouvrir le tableau de bord").click()
                assert spent.value is not None and spent.value.status == 401
                assert "déjà servi" in page.locator("main").inner_text()
                for path, status, title in (("/tableau-de-bord?departement=054", 404, "Page introuvable"),
                                            ("/tableau-de-bord?mois=2026-13", 422, "Paramètre incorrect")):  # fmt: skip
                    shown = page.goto(f"{base}{path}")
                    assert shown is not None and shown.status == status
                    assert page.locator("html").get_attribute("lang") == "fr"
                    assert page.locator("h1").inner_text() == title
                    assert page.locator("a[href='/']").count() == 1  # a way back
                stranger = browser.new_context(locale="fr-FR").new_page()  # no session: 401, how to get in
                refused = stranger.goto(f"{base}/tableau-de-bord")
                assert refused is not None and refused.status == 401
                assert stranger.locator("h1").inner_text() == "Connexion nécessaire"
                assert "dashboard link --departement" in stranger.locator("main").inner_text()
                home = stranger.goto(f"{base}/")
                assert home is not None and home.status == 200
                assert stranger.locator("a[href='/tableau-de-bord']").count() >= 1
                assert stranger.locator("a[href='/docs']").count() == 1
            finally:
                browser.close()
    finally:
        server.terminate()
        _out, err = server.communicate(timeout=30)
    assert url.split("jeton=")[1] not in err  # the link's token never reaches the server's log


MONTH_NAMES = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
               "novembre", "décembre")  # fmt: skip
