"""Single-use links to the dashboard (issue #26, item 1): `passerelle dashboard link` prints a link that opens
an 8-hour session for the person it names on one département; used once, expired after its minutes, audited
(created, used, refused), never stored in clear, ended by `/deconnexion`. French HTML pages for browsers,
the JSON errors kept for API clients. On SQLite and PostgreSQL (PASSERELLE_TEST_DATABASE_URL)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

from sqlalchemy import select, update

from app.admin.departements import ensure_departement
from app.admin.links import PATH, create_link
from app.db import session_scope
from app.models import AccessRecord, DashboardLink
from app.security import login
from app.security.apikeys import hash_key
from tests.support.cli import run_cli

HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


def _link(db, departement="055", name="Camille Martin", minutes=15) -> str:
    with session_scope(db, write=True) as session:
        ensure_departement(session, departement)
        session.flush()
        return create_link(session, db, departement=departement, name=name, minutes=minutes).token


def _events(db, action: str) -> list[AccessRecord]:
    with session_scope(db) as session:
        rows = list(
            session.scalars(select(AccessRecord).where(AccessRecord.action == action).order_by(AccessRecord.id))
        )
        session.expunge_all()
        return rows


def test_the_link_opens_one_session_once_for_its_person_and_departement(db, client):
    token = _link(db)
    with session_scope(db) as session:  # stored hashed only
        (stored,) = session.scalars(select(DashboardLink)).all()
        assert stored.token_hash == hash_key(token, db.pepper) and token not in stored.token_hash
        assert (stored.departement_code, stored.person_name, stored.used_at) == ("055", "Camille Martin", None)
        assert timedelta(minutes=14) < stored.expires_at - datetime.now(UTC) <= timedelta(minutes=15)
    shown = client.get(f"{PATH}?jeton={token}", headers=HTML)  # opening the link spends nothing: a button
    assert shown.status_code == 200 and 'method="post"' in shown.text and f'value="{token}"' in shown.text
    assert login.SESSION_COOKIE not in client.cookies
    opened = client.post(PATH, data={"jeton": token}, headers=HTML, follow_redirects=False)
    assert opened.status_code == 303 and opened.headers["location"] == "/tableau-de-bord?departement=055"
    cookie = client.cookies[login.SESSION_COOKIE]
    sealed = login.unseal(db, cookie)
    assert sealed is not None and (sealed["link"], sealed["dep"], sealed["name"]) == (
        stored.id,
        "055",
        "Camille Martin",
    )
    assert 8 * 3600 - 60 < sealed["exp"] - time.time() <= 8 * 3600  # an 8-hour session (the setting's default)
    header = next(h for h in opened.headers.get_list("set-cookie") if h.startswith(login.SESSION_COOKIE))
    assert "httponly" in header.lower() and "samesite=lax" in header.lower()
    page = client.get("/tableau-de-bord", headers=HTML)
    assert page.status_code == 200 and "Tableau de bord" in page.text
    assert client.get("/tableau-de-bord?departement=054", headers=HTML).status_code == 404  # its one département
    assert client.get("/api/v1/pilotage/tables").status_code == 401  # the cookie never opens the API
    # used once: a second visit, even from another browser, opens nothing
    client.cookies.clear()
    again = client.post(PATH, data={"jeton": token}, headers=HTML, follow_redirects=False)
    assert again.status_code == 401 and "déjà servi" in again.text and login.SESSION_COOKIE not in client.cookies
    with session_scope(db) as session:
        used = session.get(DashboardLink, stored.id)
        assert used is not None and used.used_at is not None and used.session_id == sealed["sid"]
    created, logins = _events(db, "dashboard.link"), _events(db, "dashboard.login")
    assert [(e.principal_id, e.departement_code, e.outcome) for e in created] == [("job:dashboard link", "055", "ok")]
    assert [(e.principal_id, e.departement_code, e.outcome) for e in logins] == [
        (f"lien:{stored.id}", "055", "ok"),
        (f"lien:{stored.id}", "055", "refused"),
    ]
    assert all(token not in (e.detail or "") + (e.endpoint or "") for e in created + logins)


def test_an_expired_or_unknown_link_opens_nothing_and_is_audited(db, client):
    token = _link(db, minutes=1)
    with session_scope(db, write=True) as session:  # its minute is over
        session.execute(update(DashboardLink).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    late = client.post(PATH, data={"jeton": token}, headers=HTML, follow_redirects=False)
    assert late.status_code == 401 and "expiré" in late.text and login.SESSION_COOKIE not in client.cookies
    unknown = client.post(PATH, data={"jeton": f"abc{token[3:]}"}, headers=HTML, follow_redirects=False)
    assert unknown.status_code == 401 and "pas valable" in unknown.text
    assert client.post(PATH, headers=HTML).status_code == 401
    with session_scope(db) as session:
        assert session.scalars(select(DashboardLink.used_at)).one() is None
    assert [(e.outcome, e.detail) for e in _events(db, "dashboard.login")][:2] == [
        ("refused", '{"lien": 1, "raison": "expire"}'.replace("1", str(_only_link_id(db)))),
        ("refused", '{"raison": "inconnu"}'),
    ]


def _only_link_id(db) -> int:
    with session_scope(db) as session:
        return int(session.scalars(select(DashboardLink.id)).one())


def test_logout_ends_a_link_session_on_the_server(db, client):
    token = _link(db)
    client.post(PATH, data={"jeton": token}, headers=HTML, follow_redirects=False)
    copied = client.cookies[login.SESSION_COOKIE]
    assert client.get("/tableau-de-bord", headers=HTML).status_code == 200
    bye = client.get("/deconnexion", headers=HTML)
    assert bye.status_code == 200 and "déconnecté" in bye.text
    client.cookies.clear()
    client.cookies.set(login.SESSION_COOKIE, copied)
    after = client.get("/tableau-de-bord", headers=HTML)
    assert after.status_code == 401 and "text/html" in after.headers["content-type"]
    assert "dashboard link" in after.text  # without an identity provider: how to get in


def test_the_link_command_prints_a_link_and_checks_its_options(db, monkeypatch):
    with session_scope(db, write=True) as session:
        ensure_departement(session, "055")
    done = run_cli(db, monkeypatch, "dashboard", "link", "--departement", "055", "--name", "Camille  Martin",
                   "--minutes", "30", "--url", "http://127.0.0.1:8123/")  # fmt: skip
    assert done.exit_code == 0, done.output
    url = urlparse(done.stdout.strip())
    assert (url.scheme, url.netloc, url.path) == ("http", "127.0.0.1:8123", PATH)
    (token,) = parse_qs(url.query)["jeton"]
    with session_scope(db) as session:
        (stored,) = session.scalars(select(DashboardLink)).all()
        assert stored.token_hash == hash_key(token, db.pepper) and stored.person_name == "Camille Martin"
        assert timedelta(minutes=29) < stored.expires_at - datetime.now(UTC) <= timedelta(minutes=30)
    assert run_cli(db, monkeypatch, "dashboard", "link", "--departement", "054", "--name", "X Y").exit_code == 2
    assert run_cli(db, monkeypatch, "dashboard", "link", "--departement", "055", "--name", " ").exit_code == 2
    too_long = run_cli(db, monkeypatch, "dashboard", "link", "--departement", "055", "--name", "X", "--minutes", "0")
    assert too_long.exit_code == 2


def test_browsers_get_french_pages_and_api_clients_json(client, make_api_key):
    home = client.get("/", headers=HTML)
    assert home.status_code == 200 and 'lang="fr"' in home.text
    assert 'href="/tableau-de-bord"' in home.text and 'href="/docs"' in home.text
    door = client.get("/connexion", headers=HTML)  # no identity provider here: how to get in
    assert door.status_code == 200 and "dashboard link --departement" in door.text and 'lang="fr"' in door.text
    reader, other = make_api_key(["pilotage:read"]), make_api_key(["persons:read"])
    cases = [
        ("/tableau-de-bord", {}, 401, "Connexion nécessaire"),
        ("/tableau-de-bord", {"X-API-Key": other}, 403, "Accès refusé"),
        ("/nulle-part", {}, 404, "Page introuvable"),
        ("/tableau-de-bord?departement=054", {"X-API-Key": reader}, 404, "Page introuvable"),
        ("/tableau-de-bord?mois=2026-13", {"X-API-Key": reader}, 422, "AAAA-MM"),
        ("/tableau-de-bord?mois=1899-01", {"X-API-Key": reader}, 422, "Mois impossible"),
    ]
    for path, headers, status, said in cases:
        page = client.get(path, headers={**HTML, **headers})
        assert page.status_code == status, path
        assert page.headers["content-type"].startswith("text/html") and 'lang="fr"' in page.text, path
        assert said in page.text and 'href="/"' in page.text, (path, page.text)  # with a way back
        api = client.get(path, headers=headers)  # the same without text/html: the API's JSON
        assert api.status_code == status and api.json()["error"], path
    assert client.get("/api/v1/nulle-part", headers=HTML).json()["error"] == "not_found"  # the API stays JSON


def test_a_browser_gets_a_french_503_when_the_database_is_unavailable(client, make_api_key, monkeypatch):
    from sqlalchemy.exc import OperationalError

    from app.pilotage import dashboard

    def unavailable(*_args, **_kwargs):
        raise OperationalError("SELECT 1", {}, Exception("database is locked"))

    monkeypatch.setattr(dashboard, "build", unavailable)
    key = make_api_key(["pilotage:read"])
    page = client.get("/tableau-de-bord", headers={**HTML, "X-API-Key": key})
    assert page.status_code == 503 and page.headers["retry-after"] == "5"
    assert "Service momentanément indisponible" in page.text and 'href="/"' in page.text and 'lang="fr"' in page.text
    api = client.get("/tableau-de-bord", headers={"X-API-Key": key})
    assert api.status_code == 503 and api.json()["error"] == "database_unavailable"
