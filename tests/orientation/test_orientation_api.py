"""Orientation events, episodes explanation, worklist and the indicator over HTTP; CSV import; order
independence through the database; an end-to-end run (generate -> ingest -> events -> indicator, worklist)."""

from __future__ import annotations

import json
from datetime import date, timedelta

from sqlalchemy import func, select

from app.clock import today
from app.db import get_engine, session_scope
from app.models import AccessRecord, EntryEpisode, OrientationEvent
from app.orientation.episodes import refresh_pending
from tests.support.cli import run_cli
from tests.support.factories import ingest, nouvel_entrant
from tests.support.fluxbuilder import NIR_A, NIR_B, foyer, person, write_flux


def _post(client, key, pid, body):
    return client.post(f"/api/v1/persons/{pid}/events", headers={"X-API-Key": key}, json=body)


def test_orientation_event_ends_the_delay(client, db, make_api_key, tmp_path):
    pid, t0 = nouvel_entrant(db, tmp_path)
    key = make_api_key(["orientation:write", "persons:read"])
    body = {
        "type": "orientation",
        "date": (t0 + timedelta(days=14)).isoformat(),
        "organisme": "FRANCE_TRAVAIL",
        "type_parcours": "professionnel",
        "accompagnement_global": False,
        "external_id": "plat-1",
    }
    r = _post(client, key, pid, body)
    assert r.status_code == 201, r.text
    (ep,) = r.json()["episodes"]
    assert (ep["outcome"], ep["delay_days"], ep["within_15_days"]) == ("oriente", 14, True)
    again = _post(client, key, pid, body)
    assert again.status_code == 200 and again.json()["created"] is False
    conflict = _post(client, key, pid, {**body, "organisme": "DEPARTEMENT"})
    assert conflict.status_code == 409
    documented = client.get("/openapi.json").json()["paths"]  # documented where it happens (found by Schemathesis)
    for path in ("/api/v1/persons/{person_id}/events", "/api/v1/events"):
        assert "409" in documented[path]["post"]["responses"], path

    # a correction supersedes, never overwrites: the letter went out a day later
    fix = {**body, "external_id": "plat-1-fix", "supersedes": "plat-1", "date": (t0 + timedelta(days=15)).isoformat()}
    r = _post(client, key, pid, fix)
    assert r.status_code == 201
    (ep,) = r.json()["episodes"]
    assert (ep["delay_days"], ep["within_15_days"]) == (15, False)
    with session_scope(db) as s:
        assert s.scalar(select(func.count()).select_from(OrientationEvent)) == 2

    explained = client.get(f"/api/v1/persons/{pid}/episodes", headers={"X-API-Key": key}).json()
    (ep,) = explained["episodes"]
    assert set(ep["criteria"]) == {"droit_versable", "soumis_droits_devoirs", "sans_suivi"}
    assert ep["criteria"]["droit_versable"]["facts"][0]["received_on"] == t0.isoformat()
    assert [e["external_id"] for e in explained["events"]] == ["plat-1", "plat-1-fix"]
    before = client.get(
        f"/api/v1/persons/{pid}/episodes?as_of={(t0 + timedelta(days=3)).isoformat()}", headers={"X-API-Key": key}
    ).json()
    assert before["episodes"][0]["outcome"] == "en_attente"


def test_event_validation(client, db, make_api_key, tmp_path):
    pid, t0 = nouvel_entrant(db, tmp_path)
    key = make_api_key(["orientation:write"])
    d = t0.isoformat()
    bad = [
        {"type": "orientation", "date": d},  # organisme and type_parcours required
        {"type": "orientation", "date": d, "organisme": "POLE_EMPLOI", "type_parcours": "social"},
        {"type": "orientation", "date": d, "organisme": "DEPARTEMENT", "type_parcours": "intensif"},
        {"type": "rdv_orientation", "date": d, "presence": "peut-etre"},
        {"type": "invitation", "date": d, "organisme": "DEPARTEMENT"},  # not a field of an invitation
        {"type": "contrat", "date": d},
        {"type": "teleportation", "date": d},
        {"type": "invitation", "date": "2024-02-30"},
        {"type": "invitation", "date": (today(db) + timedelta(days=2)).isoformat()},
        {"type": "invitation", "date": d, "external_id": "with space"},
        {"type": "invitation", "date": d, "supersedes": "nothing-like-that"},
    ]
    for body in bad:
        r = _post(client, key, pid, body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"] == "invalid_input"
    assert _post(client, key, 999999, {"type": "invitation", "date": d}).status_code == 404
    with session_scope(db) as s:
        assert s.scalar(select(func.count()).select_from(OrientationEvent)) == 0


def test_a_back_dated_orientation_recorded_late_counts_from_its_date(client, db, make_api_key, tmp_path):
    pid, t0 = nouvel_entrant(db, tmp_path, days_ago=40)
    key = make_api_key(["orientation:write", "pilotage:read"])
    _post(client, key, pid, {"type": "referent", "date": (t0 + timedelta(days=5)).isoformat(), "structure": "CCAS"})
    r = client.get(
        "/api/v1/pilotage/orientation",
        headers={"X-API-Key": key},
        params={"from": t0.isoformat(), "to": t0.isoformat(), "as_of": (t0 + timedelta(days=6)).isoformat()},
    )
    body = r.json()
    assert (body["nouveaux_entrants"], body["orientes_15j"], body["delai_moyen_jours"]) == (1, 1, 5)
    earlier = client.get(
        "/api/v1/pilotage/orientation",
        headers={"X-API-Key": key},
        params={"from": t0.isoformat(), "to": t0.isoformat(), "as_of": (t0 + timedelta(days=4)).isoformat()},
    ).json()
    assert (earlier["orientes_15j"], earlier["en_attente"]) == (0, 1)
    csv_r = client.get(
        "/api/v1/pilotage/orientation",
        headers={"X-API-Key": key},
        params={"from": t0.isoformat(), "to": t0.isoformat(), "format": "csv"},
    )
    assert csv_r.headers["content-type"].startswith("text/csv")
    assert csv_r.content.startswith(b"\xef\xbb\xbftable;periode;du;au;as_of")  # long form, BOM (issue #15)
    assert "attachment" in csv_r.headers["content-disposition"]
    assert (
        client.get(
            "/api/v1/pilotage/orientation",
            headers={"X-API-Key": key},
            params={"from": "2024-03-10", "to": "2024-03-01"},
        ).status_code
        == 422
    )
    assert (
        client.get(
            "/api/v1/pilotage/orientation", headers={"X-API-Key": key}, params={"from": "2024-03-10"}
        ).status_code
        == 422
    )


def test_worklist(client, db, make_api_key, tmp_path):
    pid, t0 = nouvel_entrant(db, tmp_path, days_ago=20)
    t1 = today(db) - timedelta(days=3)
    ingest(
        db,
        write_flux(
            tmp_path,
            [foyer(person(NIR_B, prenom="MARIE"), matricule="0002", commune=("55029", "55000", "BAR-LE-DUC"))],
            day=t1,
            name="b.xml",
        ),
        received_on=t1,
    )
    key = make_api_key(["persons:read", "orientation:write"])
    h = {"X-API-Key": key}
    r = client.get("/api/v1/worklist", headers=h)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [i["t0"] for i in items] == [t0.isoformat(), t1.isoformat()], "sorted by deadline"
    first = items[0]
    assert (first["days_elapsed"], first["overdue"], first["deadline_15_days"]) == (
        20,
        True,
        (t0 + timedelta(days=14)).isoformat(),
    )
    assert first["adresse"] and first["commune"] == "55545" and first["matricule"] == "0001234"
    assert [i["t0"] for i in client.get("/api/v1/worklist?overdue=true", headers=h).json()["items"]] == [t0.isoformat()]
    assert len(client.get("/api/v1/worklist?commune=55029", headers=h).json()["items"]) == 1
    assert client.get("/api/v1/worklist?organisme=MSA", headers=h).json()["total"] == 0
    page = client.get("/api/v1/worklist?limit=1&offset=1", headers=h).json()
    assert page["total"] == 2 and len(page["items"]) == 1
    past_the_end = client.get("/api/v1/worklist?limit=1&offset=5", headers=h).json()  # the total counted alone
    assert past_the_end["total"] == 2 and past_the_end["items"] == []
    assert client.get("/api/v1/worklist?limit=1&commune=55029", headers=h).json()["total"] == 1  # from the page
    for bad in ("limit=0", "limit=1000", "offset=-1", "commune=ABC", "organisme=XYZ", "overdue=maybe"):
        assert client.get(f"/api/v1/worklist?{bad}", headers=h).status_code == 422, bad
    # oriented: leaves the worklist
    _post(client, key, pid, {"type": "referent", "date": today(db).isoformat(), "structure": "CCAS"})
    assert client.get("/api/v1/worklist", headers=h).json()["total"] == 1
    with session_scope(db) as s:
        assert s.scalar(select(func.count()).select_from(AccessRecord).where(AccessRecord.action == "worklist.read"))


def test_other_departement_sees_nothing(client, db, make_api_key, tmp_path):
    pid, t0 = nouvel_entrant(db, tmp_path)
    other = make_api_key(["persons:read", "orientation:write", "pilotage:read"], ["054"])
    h = {"X-API-Key": other}
    assert client.get(f"/api/v1/persons/{pid}/episodes", headers=h).status_code == 404
    assert _post(client, other, pid, {"type": "invitation", "date": t0.isoformat()}).status_code == 404
    assert client.get("/api/v1/worklist", headers=h).json()["total"] == 0
    r = client.get("/api/v1/pilotage/orientation", headers=h, params={"from": t0.isoformat(), "to": t0.isoformat()})
    assert r.json()["nouveaux_entrants"] == 0


def test_csv_import(db, monkeypatch, tmp_path):
    pid, t0 = nouvel_entrant(db, tmp_path)
    lines = [
        "nir;date_naissance;matricule;role;evenement;date;organisme;type_parcours;accompagnement_global;presence;external_id",
        f"{NIR_A};1990-01-15;;;orientation;{(t0 + timedelta(days=3)).isoformat()};DEPARTEMENT;social;1;;imp-1",
        f";;0001234;DEM;rdv_orientation;{(t0 + timedelta(days=2)).isoformat()};;;;absent;imp-2",
        f"{NIR_B};;;;invitation;{t0.isoformat()};;;;;",  # unknown person
        f"{NIR_A};;;;orientation;2024-13-01;DEPARTEMENT;social;0;;",  # bad date
        f"{NIR_A};;;;orientation;{t0.isoformat()};NOWHERE;social;0;;",  # unknown code
        f"{NIR_A};;;;orientation;{t0.isoformat()};DEPARTEMENT;social;2;;",  # bad 0/1
    ]
    path = tmp_path / "events.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    r = run_cli(db, monkeypatch, "orientations", "import", path, "--json")
    assert r.exit_code == 1, r.output
    report = json.loads(r.stdout)
    assert (report["rows"], report["applied"], report["pending"]) == (6, 2, 1)
    assert [x["line"] for x in report["pending_rows"]] == [4]  # unknown person: kept aside, not rejected
    assert [x["line"] for x in report["rejected"]] == [5, 6, 7]
    assert "organisme" in report["rejected"][1]["reason"]
    with session_scope(db) as s:
        ep = s.scalar(select(EntryEpisode).where(EntryEpisode.person_id == pid))
        assert ep is not None and (ep.outcome, ep.delay_days, ep.accompagnement_global) == ("oriente", 3, True)
        assert ep.rdv_orientation_missed_on is not None
    again = json.loads(run_cli(db, monkeypatch, "orientations", "import", path, "--json").stdout)
    assert (again["applied"], again["pending"], again["already_known"]) == (0, 0, 3)
    assert (again["already_known_by_external_id"], again["already_known_by_content"]) == (2, 1)
    bad_header = tmp_path / "bad.csv"
    bad_header.write_text("foo;bar\n1;2\n", encoding="utf-8")
    assert run_cli(db, monkeypatch, "orientations", "import", bad_header).exit_code == 1  # input rejected
    latin = tmp_path / "latin.csv"
    latin.write_bytes("evenement;date\nr\xe9f;2024-01-01\n".encode("latin-1"))
    assert run_cli(db, monkeypatch, "orientations", "import", latin).exit_code == 1


def test_files_ingested_in_another_order_give_the_same_episodes(db, tmp_path):
    """Episodes depend only on dated facts: the same files ingested in manifest order and in reverse give
    the same episodes (the reception date, not the ingestion order, dates each fact)."""
    from app.flux.generator import generate

    files = generate(tmp_path / "gen", 150, 45, date(2024, 3, 1), seed=5)
    files = [f for f in files if not (f.type_flux == "M" and f.created_on == date(2024, 3, 1))]
    stock = [f for f in generate(tmp_path / "gen2", 150, 0, date(2024, 3, 1), seed=5) if f.type_flux == "M"]

    def run(order):
        from tests.support.database import truncate

        truncate(db)
        for f in stock:
            ingest(db, f.path, received_on=f.received_on, initial_stock=True)
        for f in order:
            assert ingest(db, f.path, received_on=f.received_on).status == "applied"
        refresh_pending(get_engine(db))
        with session_scope(db) as s:
            from app.models import Person

            rows = s.execute(
                select(
                    Person.nom,
                    Person.prenom,
                    Person.date_naissance,
                    EntryEpisode.t0,
                    EntryEpisode.outcome,
                    EntryEpisode.end_on,
                ).join(Person, Person.id == EntryEpisode.person_id)
            ).all()
        return sorted(map(tuple, rows), key=repr)

    in_order = run(files)
    assert len(in_order) > 5
    assert run(list(reversed(files))) == in_order


def test_end_to_end_generate_ingest_events_indicator_worklist(client, db, make_api_key, tmp_path):
    from app.flux.generator import generate

    start = today(db) - timedelta(days=40)
    writer = make_api_key(["flux:write"])
    files = generate(tmp_path / "e2e", 300, 35, start, seed=9)
    for f in files:
        with open(f.path, "rb") as fh:
            r = client.post(
                "/api/v1/flux",
                headers={"X-API-Key": writer},
                files={"file": (f.path.name, fh)},
                data={
                    "received_on": f.received_on.isoformat(),
                    "initial_stock": str(f.type_flux == "M" and f.created_on == start).lower(),
                },
            )
        assert r.status_code == 201, r.text
    platform = make_api_key(["persons:read", "orientation:write", "pilotage:read"])
    h = {"X-API-Key": platform}
    waiting = client.get("/api/v1/worklist?limit=200", headers=h).json()
    assert waiting["total"] > 0
    oriented = 0
    for item in waiting["items"][: waiting["total"] // 2]:
        t0 = date.fromisoformat(item["t0"])
        when = min(t0 + timedelta(days=7), today(db))
        r = _post(
            client,
            platform,
            item["person_id"],
            {
                "type": "orientation",
                "date": when.isoformat(),
                "organisme": "FRANCE_TRAVAIL",
                "type_parcours": "professionnel",
            },
        )
        assert r.status_code == 201
        oriented += 1
    after = client.get("/api/v1/worklist?limit=200", headers=h).json()
    assert after["total"] == waiting["total"] - oriented
    ind = client.get(
        "/api/v1/pilotage/orientation", headers=h, params={"from": start.isoformat(), "to": today(db).isoformat()}
    ).json()
    assert ind["nouveaux_entrants"] >= waiting["total"]
    assert ind["orientes"] >= oriented and ind["orientes_15j"] >= oriented
    assert ind["par_organisme"][0]["organisme"] == "FRANCE_TRAVAIL"
