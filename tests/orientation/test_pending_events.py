"""Events that arrive before the file that brings their person (issue #22, SPEC §3): kept aside, listed
without the NIR, applied with their own dates when a flux brings the person, or dropped; the same CSV
imported twice stores nothing the second time; `POST /api/v1/events` by NIR or matricule + role. On SQLite
and PostgreSQL."""

from __future__ import annotations

import json
from datetime import date, timedelta

from sqlalchemy import func, select

from app.db import session_scope
from app.models import AccessRecord, EntryEpisode, OrientationEvent, PendingEvent
from tests.support.cli import run_cli
from tests.support.factories import ingest
from tests.support.fluxbuilder import NIR_A, NIR_B, foyer, person, write_flux

D1 = date(2024, 3, 1)  # NIR_A's first file: a nouvel entrant, T0 = D1
D2 = date(2024, 3, 20)  # NIR_B's file
OTHER = {"nom": "MARTIN", "prenom": "ANNE", "sexe": "2", "dtnai": date(1985, 6, 2)}
HEADER = "nir;date_naissance;matricule;role;evenement;date;organisme;type_parcours;presence;external_id"


def _csv(tmp_path, name: str, *rows: str):
    path = tmp_path / name
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def _import(db, monkeypatch, path, *extra) -> dict:
    result = run_cli(db, monkeypatch, "orientations", "import", path, "--departement", "055", "--json", *extra)
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def _ingest_a(db, tmp_path, day=D1):
    directory = tmp_path / f"a-{day}"
    directory.mkdir()
    return ingest(db, write_flux(directory, [foyer(person(NIR_A))], day=day), received_on=day)


def _ingest_b(db, tmp_path, day=D2):
    directory = tmp_path / f"b-{day}"
    directory.mkdir()
    path = write_flux(directory, [foyer(person(NIR_B, **OTHER), matricule="0007777")], day=day)
    return ingest(db, path, received_on=day)


ROWS = (
    f"{NIR_A};1990-01-15;;;orientation;{D1 + timedelta(days=5)};DEPARTEMENT;social;;",
    f";;0001234;DEM;rdv_orientation;{D1 + timedelta(days=2)};;;absent;",
    f"{NIR_B};;;;invitation;{D1 + timedelta(days=1)};;;;plat-b-1",
)


def test_rows_before_their_person_are_kept_aside_then_applied_with_their_own_dates(db, monkeypatch, tmp_path):
    path = _csv(tmp_path, "events.csv", *ROWS)
    first = _import(db, monkeypatch, path)
    assert (first["applied"], first["pending"], first["rejected"]) == (0, 3, [])
    assert [r["line"] for r in first["pending_rows"]] == [2, 3, 4]
    plain = run_cli(db, monkeypatch, "orientations", "import", path, "--departement", "055")
    assert plain.exit_code == 0, plain.output  # kept aside is not rejected
    assert "3 already known, 0 en attente d'une personne, 0 rejected" in plain.output

    listed = run_cli(db, monkeypatch, "orientations", "pending", "--json")
    rows = json.loads(listed.stdout)
    assert [(r["type"], r["date"], r["source"], r["status"]) for r in rows] == [
        ("orientation", str(D1 + timedelta(days=5)), "csv", "pending"),
        ("rdv_orientation", str(D1 + timedelta(days=2)), "csv", "pending"),
        ("invitation", str(D1 + timedelta(days=1)), "csv", "pending"),
    ]
    table = run_cli(db, monkeypatch, "orientations", "pending")
    for secret in (NIR_A, NIR_B, "0001234", "1990-01-15"):
        assert secret not in listed.output and secret not in table.output
    with session_scope(db) as s:
        for row in s.scalars(select(PendingEvent)):  # encrypted at rest
            assert NIR_A not in row.payload_encrypted and "0001234" not in row.payload_encrypted

    flux = write_flux(tmp_path, [foyer(person(NIR_A))], day=D1)
    ingested = run_cli(db, monkeypatch, "flux", "ingest", flux, "--received-on", D1)
    assert ingested.exit_code == 0, ingested.output
    assert "2 orientation event(s) waiting for their person applied" in ingested.output
    with session_scope(db) as s:
        (ep,) = s.scalars(select(EntryEpisode)).all()
        missed = D1 + timedelta(days=2)
        assert (ep.t0, ep.outcome, ep.delay_days, ep.rdv_orientation_missed_on) == (D1, "oriente", 5, missed)
        events = s.scalars(select(OrientationEvent).order_by(OrientationEvent.event_date)).all()
        assert [(e.type, e.event_date, e.source) for e in events] == [
            ("rdv_orientation", D1 + timedelta(days=2), "import"),
            ("orientation", D1 + timedelta(days=5), "import"),
        ]
        applied = s.scalars(select(PendingEvent).where(PendingEvent.status == "applied")).all()
        assert sorted(p.event_id for p in applied) == sorted(e.id for e in events)
        assert {p.person_id for p in applied} == {ep.person_id}
        audited = s.scalar(
            select(func.count()).select_from(AccessRecord).where(AccessRecord.action == "orientation.pending_apply")
        )
        assert audited == 2

    # the same file once more: everything is known (the two applied, the one still waiting)
    again = _import(db, monkeypatch, path)
    assert (again["applied"], again["pending"], again["already_known"]) == (0, 0, 3)
    assert (again["already_known_by_content"], again["already_known_by_external_id"]) == (2, 1)
    with session_scope(db) as s:
        assert s.scalar(select(func.count()).select_from(OrientationEvent)) == 2
        assert s.scalar(select(func.count()).select_from(PendingEvent)) == 3

    # an operator drops the one whose person will not come; a later file bringing them does not apply it
    (waiting,) = json.loads(run_cli(db, monkeypatch, "orientations", "pending", "--json").stdout)
    dropped = run_cli(db, monkeypatch, "orientations", "drop-pending", waiting["id"], "--reason", "hors Meuse")
    assert dropped.exit_code == 0, dropped.output
    assert run_cli(db, monkeypatch, "orientations", "drop-pending", waiting["id"], "--reason", "x").exit_code == 1
    assert json.loads(run_cli(db, monkeypatch, "orientations", "pending", "--json").stdout) == []
    # while its person is unknown, the same file sent again does not bring a dropped row back
    assert (_import(db, monkeypatch, path)["pending"], _import(db, monkeypatch, path)["already_known"]) == (0, 3)
    assert _ingest_b(db, tmp_path).pending_events_applied == 0
    with session_scope(db) as s:
        row = s.get(PendingEvent, waiting["id"])
        assert row is not None and (row.status, row.reason, row.event_id) == ("dropped", "hors Meuse", None)
        assert s.scalar(select(func.count()).select_from(OrientationEvent)) == 2
        drop_audit = s.scalars(select(AccessRecord).where(AccessRecord.action == "orientation.pending_drop")).one()
        assert drop_audit.principal_id == "job:orientations drop-pending"
    # sent again now that its person is known, the row is an event like any other (a drop is no blocklist)
    last = _import(db, monkeypatch, path)
    assert (last["applied"], last["already_known"], last["pending"]) == (1, 2, 0)


def test_the_same_csv_imported_twice_stores_nothing_the_second_time(db, monkeypatch, tmp_path):
    _ingest_a(db, tmp_path)
    day = D1 + timedelta(days=3)
    path = _csv(
        tmp_path,
        "known.csv",
        f"{NIR_A};;;;orientation;{day};DEPARTEMENT;social;;",  # no external_id
        f";;0001234;DEM;rdv_orientation;{day};;;present;plat-1",  # with one
        f";;0001234;DEM;rdv_orientation;{day};;;present;plat-2",  # the same content under another id
    )
    first = _import(db, monkeypatch, path)
    assert (first["applied"], first["already_known"], first["already_known_by_content"]) == (2, 1, 1)
    second = _import(db, monkeypatch, path)
    assert (second["applied"], second["pending"], second["rejected"]) == (0, 0, [])
    assert (second["already_known_by_external_id"], second["already_known_by_content"]) == (1, 2)
    with session_scope(db) as s:
        assert s.scalar(select(func.count()).select_from(OrientationEvent)) == 2
    # the same external_id with another content is still a conflict (record_event's rule)
    conflict = _csv(tmp_path, "conflict.csv", f";;0001234;DEM;rdv_orientation;{day};;;absent;plat-1")
    assert "already used" in _import(db, monkeypatch, conflict)["rejected"][0]["reason"]


def test_a_row_repeating_a_corrected_event_changes_nothing(db, monkeypatch, tmp_path, client, make_api_key):
    """Issue #22: "a platform re-sending yesterday's export must change nothing". An event a correction
    superseded, sent again as it was (without its external_id), is already known: it never comes back to life
    beside its correction."""
    _ingest_a(db, tmp_path)
    key = make_api_key(["orientation:write"])
    first = {"type": "invitation", "date": str(D1 + timedelta(days=1)), "channel": "courrier", "external_id": "i1"}
    ref = {"nir": NIR_A}
    assert _post(client, key, ref, first).status_code == 201
    fix = {**first, "external_id": "i1-fix", "supersedes": "i1", "date": str(D1 + timedelta(days=2))}
    assert _post(client, key, ref, fix).status_code == 201
    again = _post(client, key, ref, {k: v for k, v in first.items() if k != "external_id"})
    assert again.status_code == 200 and again.json()["status"] == "known_by_content"
    with session_scope(db) as s:
        assert s.scalar(select(func.count()).select_from(OrientationEvent)) == 2


def test_events_kept_aside_for_another_departement_are_never_matched(db, monkeypatch, tmp_path):
    path = _csv(tmp_path, "054.csv", f"{NIR_A};;;;orientation;{D1 + timedelta(days=5)};DEPARTEMENT;social;;")
    result = run_cli(db, monkeypatch, "orientations", "import", path, "--departement", "054", "--json")
    assert json.loads(result.stdout)["pending"] == 1
    assert _ingest_a(db, tmp_path).pending_events_applied == 0  # NIR_A arrives in 055
    with session_scope(db) as s:
        assert s.scalar(select(func.count()).select_from(OrientationEvent)) == 0
        (row,) = s.scalars(select(PendingEvent)).all()
        assert (row.departement_code, row.status) == ("054", "pending")
    only_055 = json.loads(run_cli(db, monkeypatch, "orientations", "pending", "--departement", "055", "--json").stdout)
    assert only_055 == []


def _post(client, key, ref, event, **extra):
    return client.post("/api/v1/events", headers={"X-API-Key": key}, json={"person": ref, "event": event, **extra})


def test_post_by_reference_known_unknown_then_applied(client, db, make_api_key, tmp_path):
    _ingest_a(db, tmp_path)
    key = make_api_key(["orientation:write"])
    orientation = {
        "type": "orientation",
        "date": str(D1 + timedelta(days=4)),
        "organisme": "FRANCE_TRAVAIL",
        "type_parcours": "professionnel",
    }
    r = _post(client, key, {"nir": NIR_A, "date_naissance": "1990-01-15"}, orientation)
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["status"], body["created"]) == ("applied", True)
    assert [(e["outcome"], e["delay_days"]) for e in body["episodes"]] == [("oriente", 4)]
    same = _post(client, key, {"nir": NIR_A}, orientation)
    assert same.status_code == 200 and same.json()["status"] == "known_by_content"
    by_matricule = _post(
        client, key, {"matricule": "0001234", "role": "DEM"}, {"type": "invitation", "date": str(D1 + timedelta(1))}
    )
    assert by_matricule.status_code == 201 and by_matricule.json()["person_id"] == body["person_id"]

    # NIR_B: no flux has brought them yet
    kept = _post(client, key, {"nir": NIR_B}, {**orientation, "external_id": "b-1"})
    assert kept.status_code == 202, kept.text
    location = kept.headers["location"]
    assert location == f"/api/v1/events/pending/{kept.json()['pending']['id']}"
    assert NIR_B not in kept.text
    state = client.get(location, headers={"X-API-Key": key}).json()
    assert (state["status"], state["event_id"], state["source"]) == ("pending", None, "api")
    twice = _post(client, key, {"nir": NIR_B}, {**orientation, "external_id": "b-1"})
    assert (twice.status_code, twice.json()["status"], twice.json()["created"]) == (
        202,
        "pending_known_by_external_id",
        False,
    )
    listed = client.get("/api/v1/events/pending", headers={"X-API-Key": key}).json()["items"]
    assert [i["id"] for i in listed] == [state["id"]] and NIR_B not in json.dumps(listed)
    other = make_api_key(["orientation:write"], ["054"])
    assert client.get(location, headers={"X-API-Key": other}).status_code == 404
    assert client.get("/api/v1/events/pending", headers={"X-API-Key": other}).json()["items"] == []

    assert _ingest_b(db, tmp_path).pending_events_applied == 1
    state = client.get(location, headers={"X-API-Key": key}).json()
    assert state["status"] == "applied" and state["event_id"] and state["person_id"]
    with session_scope(db) as s:
        event = s.get(OrientationEvent, state["event_id"])
        assert event is not None and (event.event_date, event.external_id) == (D1 + timedelta(days=4), "b-1")
        # B's T0 is D2, after the orientation dated D1 + 4, which belongs to the entry (docs/rules.md, "Settled
        # in issue #22"): oriented at T0, delay 0, the orientation keeping its own date
        (ep,) = s.scalars(select(EntryEpisode).where(EntryEpisode.person_id == state["person_id"])).all()
        assert (ep.t0, ep.outcome, ep.delay_days, ep.orientation_on) == (D2, "oriente", 0, D1 + timedelta(days=4))
        kinds = {a.action for a in s.scalars(select(AccessRecord))}
        assert {"person.event", "orientation.pending_keep", "orientation.pending_apply"} <= kinds


def test_post_by_reference_is_strict(client, db, make_api_key, tmp_path):
    _ingest_a(db, tmp_path)
    key = make_api_key(["orientation:write"])
    event = {"type": "invitation", "date": str(D1)}
    bad = [
        {"nir": NIR_A, "matricule": "0001234", "role": "DEM"},  # both
        {"matricule": "0001234"},  # no role
        {"matricule": "0001234", "role": "ENF"},
        {"nir": NIR_A[:12] + "9" + "00"},  # wrong check key
        {"nir": NIR_A, "nom": "DUPONT"},  # a field that is not one
    ]
    for ref in bad:
        assert _post(client, key, ref, event).status_code == 422, ref
    assert _post(client, key, {"nir": NIR_A}, {**event, "presence": "present"}).status_code == 422
    assert _post(client, key, {"nir": NIR_A}, {**event, "date": "2999-01-01"}).status_code == 422
    assert _post(client, key, {"nir": NIR_A}, event, departement="054").status_code == 404
    assert _post(client, make_api_key(["persons:read"]), {"nir": NIR_A}, event).status_code == 403
    two = make_api_key(["orientation:write"], ["054", "055"])
    assert _post(client, two, {"nir": NIR_A}, event).status_code == 422  # which département?
    assert _post(client, two, {"nir": NIR_A}, event, departement="055").status_code == 201


def test_a_reference_that_names_several_persons_is_still_rejected(client, db, make_api_key, monkeypatch, tmp_path):
    """The same matricule and role given by two files to two persons (told apart by their NIRs): a row or a
    call naming them by it is refused, not kept aside (use the NIR)."""
    _ingest_a(db, tmp_path)
    directory = tmp_path / "b-same-matricule"
    directory.mkdir()
    path = write_flux(directory, [foyer(person(NIR_B, **OTHER), matricule="0001234")], day=D2)
    assert ingest(db, path, received_on=D2).status == "applied"
    csv = _csv(tmp_path, "ambiguous.csv", f";;0001234;DEM;invitation;{D2};;;;")
    report = _import(db, monkeypatch, csv)
    assert (report["pending"], [r["reason"] for r in report["rejected"]]) == (0, ["several persons match; use the NIR"])
    key = make_api_key(["orientation:write"])
    r = _post(client, key, {"matricule": "0001234", "role": "DEM"}, {"type": "invitation", "date": str(D2)})
    assert r.status_code == 422 and "use the NIR" in r.json()["message"]
    with session_scope(db) as s:
        assert s.scalar(select(func.count()).select_from(PendingEvent)) == 0


def test_a_pending_row_no_key_decrypts_stays_pending_and_the_others_are_applied(db, monkeypatch, tmp_path):
    """A row kept aside under a key since removed from PASSERELLE_NIR_ENCRYPTION_KEYS (before `keys rotate`):
    the file that brings its person is applied and reported, the other rows applied; that one stays pending,
    said (never dropped: restoring its key brings it back), and the next files are not blocked by it."""
    report = _import(db, monkeypatch, _csv(tmp_path, "two.csv", *ROWS[:2]))
    assert report["pending"] == 2
    with session_scope(db, write=True) as s:
        first = s.scalars(select(PendingEvent).order_by(PendingEvent.id)).first()
        assert first is not None
        first.payload_encrypted = "k9:" + first.payload_encrypted.split(":", 1)[-1]  # a key id not in force
    applied = _ingest_a(db, tmp_path)
    assert applied.status == "applied" and applied.pending_events_applied == 1
    with session_scope(db) as s:
        rows = s.scalars(select(PendingEvent).order_by(PendingEvent.id)).all()
        assert [r.status for r in rows] == ["pending", "applied"]
        assert rows[0].reason is not None and rows[0].reason.startswith("unreadable with the keys in force")
    assert _ingest_a(db, tmp_path, day=D2).status == "applied"
