"""Review of issue #26 (dashboard links, French pages, freshness, CSV rates, operator's path): each test shows
a defect found in review, or pins a property the review checked (SQLite and PostgreSQL:
PASSERELLE_TEST_DATABASE_URL)."""

from __future__ import annotations

import threading
from datetime import date

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.admin import links
from app.admin.departements import ensure_departement
from app.db import session_scope, write_transaction
from app.main import create_app
from app.models import AccessRecord, DashboardLink
from app.security import login

HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
FORGED = "A" * 43


def _link(db, departement="055", name="Camille Martin", minutes=15) -> str:
    with session_scope(db, write=True) as session:
        ensure_departement(session, departement)
        session.flush()
        return links.create_link(session, db, departement=departement, name=name, minutes=minutes).token


def _refused_link_events(db) -> int:
    with session_scope(db) as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(AccessRecord)
                .where(AccessRecord.action == "dashboard.login", AccessRecord.outcome == "refused")
            )
        )


def test_two_uses_of_one_link_at_once_open_one_session(db):
    """Single use under concurrency: two requests redeem the same token at the same moment; exactly one
    session is opened (SQLite: the writer's lock; PostgreSQL: the conditional UPDATE re-checked)."""
    token = _link(db)
    barrier = threading.Barrier(2)
    results: list[str] = []

    def use(n: int) -> None:
        with session_scope(db) as session:
            barrier.wait()
            try:
                with write_transaction(session):
                    links.redeem(session, db, token, f"sid{n}")
                results.append("opened")
            except links.LinkRefused as exc:
                results.append(str(exc.detail.get("raison")))

    threads = [threading.Thread(target=use, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == ["deja_utilise", "opened"]
    with session_scope(db) as s:
        assert s.scalars(select(DashboardLink.session_id)).one() in {"sid0", "sid1"}


def test_a_flood_of_forged_dashboard_links_is_limited_like_the_download_links(db):
    """Defect: POST /connexion/lien with a forged token wrote one `dashboard.login` refused event per attempt,
    and was never held back (every other refusal without a credential counts against its address's limit,
    issue #23: 429 beyond PASSERELLE_MAX_REFUSED_PER_MINUTE)."""
    settings = db.model_copy(update={"max_refused_per_minute": 5})
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False, client=("203.0.113.9", 1)) as c:
        answers = [c.post(links.PATH, data={"jeton": FORGED}, headers=HTML, follow_redirects=False) for _ in range(20)]
    assert [r.status_code for r in answers[:5]] == [401] * 5
    assert {r.status_code for r in answers[5:]} == {429}
    assert "Trop de demandes" in answers[5].text and "retry-after" in answers[5].headers
    assert all("retry-after" in r.headers for r in answers[5:])
    assert _refused_link_events(db) <= 6  # not one per attempt


def test_a_link_session_opens_only_its_own_departement(db, client):
    """A link for 055 must not show 054's dashboard, nor reach the API with its cookie."""
    with session_scope(db, write=True) as session:
        ensure_departement(session, "054")
    token = _link(db, "055")
    opened = client.post(links.PATH, data={"jeton": token}, headers=HTML, follow_redirects=False)
    assert opened.status_code == 303 and login.SESSION_COOKIE in client.cookies
    assert client.get("/tableau-de-bord?departement=055", headers=HTML).status_code == 200
    other = client.get("/tableau-de-bord?departement=054", headers=HTML)
    assert other.status_code in (403, 404) and "<html" in other.text
    api = client.get("/api/v1/pilotage/tables", headers={"Accept": "application/json"})
    assert api.status_code == 401 and api.json()["error"] == "unauthenticated"


def test_the_page_after_login_is_never_another_site():
    """Defect (open redirect): `/connexion?suite=/\\evil.example` came back from the identity provider as
    `Location: /\\evil.example`, which browsers read as `//evil.example` (WHATWG URL: a backslash is a slash
    in http(s) URLs)."""
    for way in ("/\\evil.example", "/\\/evil.example", "/x\\..\\\\evil.example"):
        assert login.safe_next(way) == login.PAGES[0], way
    for way in ("/tableau-de-bord?mois=2026-11", "/tableau-de-bord"):
        assert login.safe_next(way) == way


def test_a_rate_survives_a_copy_with_its_terms():
    """Defect: `Rate` (a float remembering its numerator and denominator for the CSV) could not be copied,
    deep-copied or pickled (`Rate.__new__() missing 1 required positional argument`): a table copied (a cache,
    a worker process) failed."""
    import copy
    import pickle

    from app.pilotage.tables import Rate

    rate = Rate(10, 21)
    for copied in (copy.copy(rate), copy.deepcopy({"t": [rate]})["t"][0], pickle.loads(pickle.dumps(rate))):  # noqa: S301
        assert isinstance(copied, Rate)
        assert (float(copied), copied.numerator, copied.denominator) == (round(10 / 21, 4), 10, 21)


def test_the_auditors_terminal_shows_a_stored_detail_as_it_is(db, monkeypatch):
    """Item 5 shows each event's detail at the terminal (rich tables): a detail stored with square brackets
    (a file name, a client's name: text from outside) was read as rich markup, `[/x]` crashed the command
    (MarkupError, exit 4) and `[bold]` disappeared."""
    from app.audit.chain import record_action_now
    from app.db import get_engine
    from tests.support.cli import run_cli

    with session_scope(db, write=True) as session:
        ensure_departement(session, "055")
    record_action_now(get_engine(db), "job:test", "flux.ingest", "055", outcome="rejected",
                      detail={"fichier": "RSA[/x][bold]B.xml"})  # fmt: skip
    shown = run_cli(db, monkeypatch, "audit", "accesses", "--outcome", "rejected")
    assert shown.exit_code == 0, shown.output
    assert "RSA[/x][bold]B.xml" in shown.output.replace("\n", "").replace(" ", "") or "[/x][bold]" in shown.output


def test_an_error_naming_a_path_with_brackets_is_one_line(capsys):
    """Same defect in every command's error line (`error: ...` printed as rich markup): a message naming what
    the person typed (a path, a name) with `[/x]` in it crashed with a traceback instead of the one line."""
    from app.cli.common import ExitCode, fail

    fail("cannot read /tmp/RSA[/x][bold]B.xml", ExitCode.USAGE)
    said = capsys.readouterr().err
    assert "/tmp/RSA[/x][bold]B.xml" in said.replace("\n", "")


def test_a_monitoring_check_of_freshness_needs_no_power_to_ingest_files(client, make_api_key):
    """Item 3's check for a monitoring system (`/api/v1/flux/freshness`) asked `flux:write`: the monitoring
    host had to hold a key that can upload beneficiary files (personal data) to read a status the dashboard
    already shows to `pilotage:read`. It now takes `pilotage:read`."""
    reader = make_api_key(["pilotage:read"])
    answer = client.get("/api/v1/flux/freshness", headers={"X-API-Key": reader})
    assert answer.status_code == 200 and answer.json()["status"] in ("ok", "silencieux")


def test_the_default_month_is_never_the_month_still_running(client, make_api_key):
    """Defect: on a month's last day the dashboard opened on that month (complete: `last_complete_month` and
    docs/pilotage.md count the day) and its own tiles then said "provisoire : mois en cours au 30/11/2026",
    calling the default month the running one the issue asked not to open on."""
    from datetime import date

    from app.pilotage.dashboard import last_complete_month

    assert last_complete_month(date(2026, 11, 30)) == "2026-11"
    assert last_complete_month(date(2026, 12, 1)) == "2026-11"
    assert last_complete_month(date(2026, 12, 6)) == "2026-11"
    key = make_api_key(["pilotage:read"])
    for day in ("2026-11-30", "2026-12-01", "2026-12-06"):
        page = client.get(f"/tableau-de-bord?as_of={day}", headers={**HTML, "X-API-Key": key})
        assert page.status_code == 200 and "mois en cours" not in page.text, day


def test_freshness_on_the_last_day_a_date_can_hold_is_one_line(db, monkeypatch, tmp_path):
    """Defect: `passerelle flux freshness --as-of 9999-12-31` counted working days one past the last date
    Python holds (OverflowError: a traceback, exit 4); the API bounds its dates (1900-2999), the CLI did not."""
    from app.flux.freshness import working_days_between
    from tests.support.cli import run_cli

    # 24/12/9999 a Friday: 25 (Noël) and 26 a weekend, 27 to 31 Monday to Friday
    assert working_days_between(date(9999, 12, 24), date(9999, 12, 31)) == 5
    with session_scope(db, write=True) as session:
        ensure_departement(session, "055")
    shown = run_cli(db, monkeypatch, "flux", "freshness", "--as-of", "9999-12-31")
    assert shown.exit_code in (0, 1, 2), shown.output


def test_a_missing_grant_is_not_called_a_refused_password():
    """Defect: "permission denied for schema public" (connected, then a statement refused: PostgreSQL 15's
    default for the schema public, a grant missing) was said "refused the connection (role or password)":
    the operator checks a password that is right. The refused connection (CONNECT on the database) stays so."""
    from app.cli.common import database_problem

    for refused in ("permission denied for schema public", "permission denied for table persons"):
        said = database_problem(Exception(refused))
        assert "password" not in said and refused.split(" for ")[1] in said, said
    said = database_problem(Exception('connection failed: FATAL:  permission denied for database "test"'))
    assert "refused the connection" in said
