"""The dashboard's browser session (issue #23): its cookie lived as long as the identity provider's token
(a token valid until 2083 gave a cookie valid until 2083), and `/deconnexion` only asked the browser to
forget it (a copy kept working). Now the session lasts `PASSERELLE_DASHBOARD_SESSION_HOURS` at most (Max-Age,
Expires, and the sealed `exp` the server checks), and logging out ends it on the server. Over real HTTP
through the fake identity provider, on SQLite and PostgreSQL."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
import pytest
from pydantic import SecretStr

from app.db import session_scope
from app.main import create_app
from app.models import BrowserSessionRevocation
from app.security import login
from app.settings import Environment
from tests.support.fake_idp import SECRET, fake_idp
from tests.support.live_server import LiveServer


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _settings(db, idp_base: str, port: int, hours: float = 8):
    return db.model_copy(update={
        "oidc_authorization_endpoint": f"{idp_base}/authorize", "oidc_token_endpoint": f"{idp_base}/token",
        "oidc_client_id": "passerelle-tableau-de-bord", "oidc_client_secret": SecretStr(SECRET),
        "public_url": f"http://127.0.0.1:{port}", "dashboard_session_hours": hours,
    })  # fmt: skip


def _session_cookie_header(response: httpx.Response) -> str:
    for history in [*response.history, response]:
        for header in history.headers.get_list("set-cookie"):
            if header.startswith(f"{login.SESSION_COOKIE}="):
                return header
    raise AssertionError("no session cookie set")


def test_the_session_lasts_hours_not_the_tokens_lifetime_and_logout_ends_it_on_the_server(db, make_token):
    until_2083 = int(datetime(2083, 1, 1, tzinfo=UTC).timestamp() - time.time())
    idp = fake_idp(lambda **kw: make_token(exp_in=until_2083, **kw), roles=["passerelle-data-scientist"])
    port = _free_port()
    with LiveServer(idp) as idp_base:
        settings = _settings(db, idp_base, port)
        with LiveServer(create_app(settings), port=port) as base:
            with httpx.Client(base_url=base, follow_redirects=True) as browser:
                before = time.time()
                page = browser.get("/tableau-de-bord")
                assert page.status_code == 200, page.text
                header = _session_cookie_header(page)
                attributes = {a.strip().split("=", 1)[0].lower(): a.strip().partition("=")[2]
                              for a in header.split(";")[1:]}  # fmt: skip
                assert 8 * 3600 - 5 <= int(attributes["max-age"]) <= 8 * 3600, header
                expires = parsedate_to_datetime(attributes["expires"]).timestamp()
                assert before + 8 * 3600 - 5 <= expires <= time.time() + 8 * 3600 + 1, header
                assert "httponly" in attributes and attributes["samesite"].lower() == "lax", header
                assert login.unseal(settings, browser.cookies[login.SESSION_COOKIE])["exp"] <= time.time() + 8 * 3600
                copied = browser.cookies[login.SESSION_COOKIE]
                with httpx.Client(base_url=base) as other:  # the copy works while the session lives
                    assert other.get("/tableau-de-bord", cookies={login.SESSION_COOKIE: copied}).status_code == 200
                bye = browser.get("/deconnexion")
                assert bye.status_code == 200 and "déconnecté" in bye.text
                assert login.SESSION_COOKIE not in browser.cookies
            with httpx.Client(base_url=base) as other:  # ... and not after the logout
                after = other.get("/tableau-de-bord", cookies={login.SESSION_COOKIE: copied})
                assert after.status_code == 303 and after.headers["location"].startswith("/connexion?suite=")
                assert other.get("/deconnexion", cookies={login.SESSION_COOKIE: copied}).status_code == 200
    with session_scope(db) as s:
        (revoked,) = s.query(BrowserSessionRevocation).all()
        assert revoked.session_id == login.unseal(settings, copied)["sid"]


def test_a_session_past_its_hours_is_refused_by_the_server_whatever_the_browser_keeps(db):
    """The cap is in the sealed content too: a client that ignores Max-Age gains nothing."""
    settings = db.model_copy(update={"dashboard_session_hours": 8.0})
    far = datetime(2083, 1, 1, tzinfo=UTC).timestamp()
    with session_scope(db) as s:
        fresh = login.open_session(settings, "token", far)
        assert login.session_token(settings, s, fresh.cookie) == "token"
        assert fresh.max_age == 8 * 3600 and fresh.expires <= time.time() + 8 * 3600
        old = login.open_session(settings, "token", far, now=time.time() - 8 * 3600 - 1)
        assert login.session_token(settings, s, old.cookie) is None
        short = login.open_session(settings, "token", time.time() + 60)  # never beyond the token's expiry
        assert 55 <= short.max_age <= 60
        # a cookie sealed before sessions had an id cannot be ended: refused, the person logs in again
        legacy = login.seal(settings, {"token": "token", "exp": time.time() + 60})
        assert login.session_token(settings, s, legacy) is None
    assert login.secure_cookies(db.model_copy(update={"env": Environment.prod, "public_url": None}))
    assert login.secure_cookies(db.model_copy(update={"public_url": "https://passerelle.departement.test"}))
    assert not login.secure_cookies(db.model_copy(update={"public_url": "http://127.0.0.1:8000"}))
