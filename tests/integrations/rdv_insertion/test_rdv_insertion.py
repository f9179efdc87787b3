"""RDV-Insertion's signed webhooks (issue #11), over real HTTP through the running app, on SQLite and
PostgreSQL. Deliveries are built exactly as RDV-Insertion builds them: compact JSON `{"data", "meta"}`,
`X-RDVI-SIGNATURE` = lowercase hex HMAC-SHA256 of the raw bytes."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from app.clock import today
from app.db import get_engine, session_scope
from app.models import EntryEpisode, OrientationEvent, Person, WebhookDelivery
from app.orientation.episodes import refresh_pending
from tests.support.factories import ingest
from tests.support.fluxbuilder import NIR_A, NIR_B, NIR_C, foyer, person, write_flux
from tests.support.live_server import LiveServer
from tests.support.rdv_insertion import NIR15_A, SECRET, rdv_delivery, rdvi_user, signed


@pytest.fixture
def webhook_app(db):
    from app.main import create_app

    settings = db.model_copy(update={"rdv_insertion_secrets": SecretStr(json.dumps({"055": SECRET}))})
    return create_app(settings)


def _episode(db, nir_person_id):
    refresh_pending(get_engine(db))
    with session_scope(db) as s:
        return s.scalar(select(EntryEpisode).where(EntryEpisode.person_id == nir_person_id))


def test_a_scenario_of_signed_deliveries(db, webhook_app, make_api_key, tmp_path):
    t0 = today(db) - timedelta(days=20)
    a = foyer(person(NIR_A), matricule="0001234")
    b = foyer(
        person(None, nom="PETIT", prenom="ANNE", sexe="2", dtnai=(t0.replace(year=1985))), matricule="000567800000000"
    )
    ingest(db, write_flux(tmp_path, [a, b], day=t0), received_on=t0)
    with session_scope(db) as s:
        ids = {p.nom: p.id for p in s.scalars(select(Person))}
    url = "/api/v1/webhooks/rdv-insertion/055"
    key = make_api_key(["orientation:write", "persons:read", "pilotage:read"])
    rdv_day = t0 + timedelta(days=5)
    with LiveServer(webhook_app) as base, httpx.Client(base_url=base, timeout=30) as http:

        def send(payload, secret=SECRET):
            body, headers = signed(payload, secret)
            return http.post(url, content=body, headers=headers)

        created = rdv_delivery(
            1, rdv_day, "unknown", [rdvi_user(nir=NIR15_A)], "created", "2024-03-07T11:05:00.123+01:00"
        )
        r = send(created)
        assert r.status_code == 200 and r.json()["items"] == {"applied": 1}, r.text
        noshow = rdv_delivery(
            1, rdv_day, "noshow", [rdvi_user(nir=NIR15_A)], "updated", "2024-03-08T09:00:00.000+01:00"
        )
        assert send(noshow).json()["items"] == {"applied": 1}
        again = send(noshow)
        assert again.status_code == 200 and again.json()["status"] == "duplicate"
        older = rdv_delivery(1, rdv_day, "seen", [rdvi_user(nir=NIR15_A)], "updated", "2024-03-07T18:00:00.000+01:00")
        assert send(older).json()["items"] == {"older": 1}
        # known only by numéro CAF (15-character CAF form, leading zeros stripped as RDV-Insertion does) + role
        petit = rdvi_user(
            id=901, first_name="Anne", last_name="PETIT", birth_date="1900-01-01", affiliation_number="567800000000"
        )
        assert send(rdv_delivery(2, rdv_day, "seen", [petit], "created", "2024-03-07T12:00:00+01:00")).json()[
            "items"
        ] == {"applied": 1}
        with session_scope(db) as s:
            deliveries = s.scalar(select(func.count()).select_from(WebhookDelivery))
        forged = send(
            rdv_delivery(3, rdv_day, "seen", [rdvi_user(nir=NIR15_A)], "created", "2024-03-09T12:00:00+01:00"), "wrong"
        )
        assert forged.status_code == 401
        invitation = {
            "data": {
                "id": 77,
                "format": "sms",
                "created_at": f"{(t0 + timedelta(days=1)).isoformat()}T08:00:00+01:00",
                "delivery_status": "delivered",
                "user": rdvi_user(nir=NIR15_A),
            },
            "meta": {"model": "Invitation", "event": "created", "timestamp": "2024-03-06T08:00:00+01:00"},
        }
        assert send(invitation).json()["items"] == {"applied": 1}
        stranger = rdvi_user(id=902, nir=NIR_C + "45", first_name="Paul", last_name="NOUVEAU", birth_date="1970-02-02")
        r = send(
            rdv_delivery(4, today(db) - timedelta(days=3), "noshow", [stranger], "created", "2024-03-10T10:00:00+01:00")
        )
        assert r.json()["items"] == {"unmatched": 1}
        waiting = http.get(f"{url[: url.rindex('/')]}/unmatched", headers={"X-API-Key": key}).json()["items"]
        assert [(w["record"], w["event"]) for w in waiting] == [("participation:40", "rdv_orientation")]
        assert "NOUVEAU" not in json.dumps(waiting) and NIR_C not in json.dumps(waiting)
        # the platform orients A after the no-show (orientation decisions do not come by webhook)
        oriented = {
            "type": "orientation",
            "date": (t0 + timedelta(days=9)).isoformat(),
            "organisme": "DEPARTEMENT",
            "type_parcours": "social",
        }
        assert (
            http.post(f"/api/v1/persons/{ids['DUPONT']}/events", json=oriented, headers={"X-API-Key": key}).status_code
            == 201
        )
        indicator = http.get(
            "/api/v1/pilotage/orientation",
            params={"from": t0.isoformat(), "to": today(db).isoformat()},
            headers={"X-API-Key": key},
        ).json()
    assert indicator["absents_rdv_orientation"] == 1
    with session_scope(db) as s:
        assert s.scalar(select(func.count()).select_from(WebhookDelivery)) == deliveries + 2  # not the forged one
        events = s.scalars(select(OrientationEvent).order_by(OrientationEvent.id)).all()
        mine = [(e.person_id, e.type, e.presence, e.supersedes_id is not None) for e in events if e.source == "webhook"]
    assert mine == [
        (ids["DUPONT"], "rdv_orientation", "prevu", False),
        (ids["DUPONT"], "rdv_orientation", "absent", True),
        (ids["PETIT"], "rdv_orientation", "present", False),
        (ids["DUPONT"], "invitation", None, False),
    ]
    episode = _episode(db, ids["DUPONT"])
    assert episode.rdv_orientation_missed_on is not None and episode.invitation_on == t0 + timedelta(days=1)
    # the stranger arrives in a flux: the waiting RDV is given to them, dated by its own date
    c_day = today(db) - timedelta(days=6)
    c = foyer(
        person(NIR_C, nom="NOUVEAU", prenom="PAUL", dtnai=t0.replace(year=1970, month=2, day=2)), matricule="0009999"
    )
    (tmp_path / "c").mkdir()
    report = ingest(db, write_flux(tmp_path / "c", [c], day=c_day), received_on=c_day)
    assert report.webhook_events_matched == 1
    with session_scope(db) as s:
        pid = s.scalar(select(Person.id).where(Person.nom == "NOUVEAU"))
        (event,) = s.scalars(select(OrientationEvent).where(OrientationEvent.person_id == pid)).all()
        assert (event.presence, event.event_date) == ("absent", today(db) - timedelta(days=3))


def test_bad_deliveries(db, webhook_app, tmp_path):
    t0 = today(db) - timedelta(days=20)
    ingest(
        db,
        write_flux(
            tmp_path,
            [foyer(person(NIR_A)), foyer(person(NIR_B, role="CJT", nom="MARTIN", prenom="ANNE", sexe="2"))],
            day=t0,
        ),
        received_on=t0,
    )
    url = "/api/v1/webhooks/rdv-insertion/055"
    day = t0 + timedelta(days=2)
    good = rdv_delivery(1, day, "seen", [rdvi_user(nir=NIR15_A)], "created", "2024-03-07T11:05:00+01:00")
    with LiveServer(webhook_app) as base, httpx.Client(base_url=base, timeout=30) as http:
        body, headers = signed(good)
        assert http.post(url, content=body, headers={"Content-Type": "application/json"}).status_code == 401
        other_body, _ = signed(
            rdv_delivery(1, day, "noshow", [rdvi_user(nir=NIR15_A)], "created", "2024-03-07T11:05:00+01:00")
        )
        assert http.post(url, content=other_body, headers=headers).status_code == 401  # signature of another body
        assert http.post("/api/v1/webhooks/rdv-insertion/054", content=body, headers=headers).status_code == 404
        big = b'{"data":{},"meta":{},"pad":"' + b"x" * 2_000_000 + b'"}'
        assert (
            http.post(
                url,
                content=big,
                headers=signed({})[1]
                | {"X-Rdvi-Signature": hmac.new(SECRET.encode(), big, hashlib.sha256).hexdigest()},
            ).status_code
            == 413
        )

        def send(payload_or_bytes):
            raw = payload_or_bytes if isinstance(payload_or_bytes, bytes) else json.dumps(payload_or_bytes).encode()
            sig = hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
            return http.post(url, content=raw, headers={"Content-Type": "application/json", "X-RDVI-SIGNATURE": sig})

        assert send(b"{not json").status_code == 422
        unknown = dict(good, meta={"model": "Lieu", "event": "created", "timestamp": "2024-03-07T11:05:00+01:00"})
        assert "Lieu" in send(unknown).json()["message"]
        no_user = json.loads(json.dumps(good))
        del no_user["data"]["participations"][0]["user"]
        assert send(no_user).status_code == 422
        naive = rdv_delivery(5, day, "seen", [rdvi_user(nir=NIR15_A)], "created", "2024-03-07T11:05:00")
        assert "offset" in send(naive).json()["message"]
        elsewhere = json.loads(json.dumps(good))
        elsewhere["data"]["organisation"]["department_number"] = "54"
        assert send(elsewhere).status_code == 422
        # a user whose numéro CAF has no role matches the DEM and the CJT of the foyer: nobody
        both = rdvi_user(nir=None, role=None, affiliation_number="0001234", first_name="X", last_name="Y")
        r = send(rdv_delivery(6, day, "seen", [both], "created", "2024-03-07T11:06:00+01:00"))
        assert r.status_code == 200 and r.json()["items"] == {"unmatched": 1}
    with session_scope(db) as s:
        kept = s.scalars(select(WebhookDelivery.status)).all()
        assert kept.count("malformed") == 5 and "processed" in kept  # malformed ones kept for inspection
        assert s.scalar(select(func.count()).select_from(OrientationEvent)) == 0


def test_a_mapping_change_is_replayed_from_the_stored_deliveries(db, webhook_app, monkeypatch, tmp_path):
    """A motif category the Département had not mapped is acknowledged and ignored; once mapped (a
    setting), `passerelle webhooks replay --since D` takes what the stored delivery says."""
    from tests.support.cli import run_cli

    t0 = today(db) - timedelta(days=20)
    ingest(db, write_flux(tmp_path, [foyer(person(NIR_A))], day=t0), received_on=t0)
    payload = rdv_delivery(
        8,
        t0 + timedelta(days=4),
        "seen",
        [rdvi_user(nir=NIR15_A)],
        "created",
        "2024-03-07T11:05:00+01:00",
        category="rsa_atelier_meuse",
    )
    with LiveServer(webhook_app) as base, httpx.Client(base_url=base, timeout=30) as http:
        body, headers = signed(payload)
        r = http.post("/api/v1/webhooks/rdv-insertion/055", content=body, headers=headers)
    assert r.status_code == 200 and r.json()["items"] == {"ignored": 1}
    monkeypatch.setenv("PASSERELLE_RDV_INSERTION_ACCOMPANIMENT_CATEGORIES", '["rsa_atelier_meuse"]')
    since = (today(db) - timedelta(days=1)).isoformat()
    replayed = run_cli(db, monkeypatch, "webhooks", "replay", "--since", since, "--json")
    assert replayed.exit_code == 0, replayed.output
    assert json.loads(replayed.stdout) == {"055": {"applied": 1}}
    again = run_cli(db, monkeypatch, "webhooks", "replay", "--since", since, "--json")
    assert json.loads(again.stdout) == {"055": {}}  # taken once
    with session_scope(db) as s:
        (event,) = s.scalars(select(OrientationEvent)).all()
        assert (event.type, event.presence) == ("rdv_accompagnement", "present")
    listed = run_cli(db, monkeypatch, "webhooks", "unmatched", "--json")
    assert listed.exit_code == 0 and json.loads(listed.stdout) == []


EXPORT_HEADER = [
    "Civilité", "Nom", "Prénom", "Numéro CAF", "ID interne au département", "ID France Travail", "Email",
    "Adresse", "CP", "Ville", "Téléphone", "Date de naissance", "Date de création", "Date d'entrée flux", "Rôle",
    "Première invitation envoyée le", "Dernière invitation envoyée le", "Dernière convocation envoyée le",
    "Date du dernier RDV", "Heure du dernier RDV", "Motif du dernier RDV", "Nature du dernier RDV",
    "Dernier RDV pris en autonomie ?", "Dernier RDV pris le", "Statut du rdv",
    "Rendez-vous d'orientation (RSA) honoré en - moins de 30 jours?",
    "Rendez-vous d'orientation (RSA) honoré en - moins de 15 jours?", "Date d'orientation", "Type d'orientation",
    "Date de début d'accompagnement", "Date de fin d'accompagnement", "Structure d'orientation", "Référent(s)",
    "Nombre d'organisations", "Nom des organisations", "Tags",
]  # fmt: skip


def _export_row(**values: str) -> list[str]:
    return [values.get(column, "") for column in EXPORT_HEADER]


def test_an_rdv_insertion_users_export_imports_into_the_expected_episodes(db, monkeypatch, tmp_path):
    from tests.support.cli import run_cli

    t0 = today(db) - timedelta(days=20)
    ingest(db, write_flux(tmp_path, [foyer(person(NIR_A))], day=t0), received_on=t0)
    fr = lambda n: (t0 + timedelta(days=n)).strftime("%d/%m/%Y")  # noqa: E731

    def write(status: str) -> object:
        a = _export_row(**{
            "Civilité": "M", "Nom": "DUPONT", "Prénom": "JEAN", "Numéro CAF": "0001234", "Rôle": "demandeur",
            "Date de naissance": "15/01/1990", "Email": "jean@exemple.fr", "Téléphone": "+33612345678",
            "Première invitation envoyée le": fr(1), "Dernière invitation envoyée le": fr(3),
            "Date du dernier RDV": fr(5), "Heure du dernier RDV": "10:00", "Motif du dernier RDV": "RSA orientation",
            "Nature du dernier RDV": "individuel", "Dernier RDV pris en autonomie ?": "Non", "Statut du rdv": status,
            "Date d'orientation": fr(8), "Type d'orientation": "Sociale", "Date de début d'accompagnement": fr(10),
            "Structure d'orientation": "Conseil départemental de la Meuse", "Référent(s)": "a@cd55.fr, b@cd55.fr",
            "Nombre d'organisations": "1", "Nom des organisations": "CD 55",
        })  # fmt: skip
        stranger = _export_row(Nom="NOUVEAU", Prénom="PAUL", **{"Numéro CAF": "9999999", "Rôle": "demandeur"})
        lines = [";".join(EXPORT_HEADER), ";".join(a), ";".join(stranger)]
        path = tmp_path / f"export-{status[:5]}.csv"
        path.write_bytes(b"\xef\xbb\xbf" + ("\n".join(lines) + "\n").encode("utf-8"))
        return path

    first = run_cli(db, monkeypatch, "orientations", "import", write("Absence non excusée"), "--json")
    report = json.loads(first.stdout)
    assert first.exit_code == 1 and report["applied"] == 4 and [r["line"] for r in report["rejected"]] == [3]
    with session_scope(db) as s:
        pid = s.scalar(select(Person.id))
    episode = _episode(db, pid)
    assert (episode.outcome, episode.end_on, episode.type_parcours, episode.organisme) == (
        "oriente",
        t0 + timedelta(days=10),
        "social",
        "DEPARTEMENT",
    )
    assert episode.rdv_orientation_missed_on is not None and episode.invitation_on == t0 + timedelta(days=1)
    again = json.loads(
        run_cli(db, monkeypatch, "orientations", "import", write("Absence non excusée"), "--json").stdout
    )
    assert (again["applied"], again["already_known"]) == (0, 1)
    newer = json.loads(run_cli(db, monkeypatch, "orientations", "import", write("Rendez-vous honoré"), "--json").stdout)
    assert newer["applied"] == 1  # the last RDV's new status supersedes the one imported before
    assert _episode(db, pid).rdv_orientation_missed_on is None


def test_deliveries_while_a_file_is_ingested_and_in_parallel(db, webhook_app, tmp_path):
    """Several deliveries at once, while a bigger file is applied: every one answered 200 (no 5xx, no
    "database is locked"), each applied once."""
    import threading

    from app.flux.generator import generate
    from app.flux.loader import IngestOptions, ingest_file

    t0 = today(db) - timedelta(days=20)
    ingest(db, write_flux(tmp_path, [foyer(person(NIR_A))], day=t0), received_on=t0)
    out = tmp_path / "more"
    generate(out, 1500, 0, today(db) - timedelta(days=3), seed=99, departement="055")
    stock = sorted(out.glob("CAF_*_M_*.xml"))[0]
    answers: list[int] = []
    errors: list[BaseException] = []
    with LiveServer(webhook_app) as base:

        def client(n: int) -> None:
            try:
                with httpx.Client(base_url=base, timeout=60) as http:
                    for k in range(5):
                        rdv = rdv_delivery(
                            100 + n * 10 + k,
                            t0 + timedelta(days=2),
                            "seen",
                            [rdvi_user(nir=NIR15_A)],
                            "created",
                            f"2024-03-07T11:{n:02d}:{k:02d}+01:00",
                            category="rsa_accompagnement",
                        )
                        body, headers = signed(rdv)
                        answers.append(
                            http.post("/api/v1/webhooks/rdv-insertion/055", content=body, headers=headers).status_code
                        )
            except BaseException as exc:  # said below
                errors.append(exc)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        report = ingest_file(get_engine(db), db, stock, IngestOptions(today(db) - timedelta(days=1)))
        for t in threads:
            t.join(timeout=120)
    assert errors == [] and report.status == "applied"
    assert answers == [200] * 20
    with session_scope(db) as s:
        assert s.scalar(select(func.count()).where(OrientationEvent.source == "webhook")) == 20


def test_a_well_signed_delivery_of_unexpected_shape_is_kept_and_replayed_after_a_fix(
    db, webhook_app, monkeypatch, tmp_path
):
    """Issue #23: a well-signed delivery whose fields have another type than expected (an organisation
    given as a text, a list for a status, a record id that is an object, a date out of range, JSON nested
    beyond reason) was a 500 and lost (the transaction rolled back). Each is answered 422, stored as
    unreadable (`malformed`) with the reason, and `passerelle webhooks replay --unreadable` applies it once
    a new version of the code reads it."""
    from app.integrations.rdv_insertion import webhooks as rdvi
    from tests.support.cli import run_cli

    t0 = today(db) - timedelta(days=20)
    ingest(db, write_flux(tmp_path, [foyer(person(NIR_A))], day=t0), received_on=t0)
    day = t0 + timedelta(days=3)
    good = rdv_delivery(9, day, "seen", [rdvi_user(nir=NIR15_A)], "created", "2024-03-07T11:05:00+01:00")

    def changed(path, value):
        payload = json.loads(json.dumps(good))
        target = payload
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
        return json.dumps(payload).encode()

    organisation_as_text = changed(("data", "organisation"), "Conseil départemental de la Meuse")
    bodies = [
        organisation_as_text,
        changed(("data", "motif"), ["rsa_orientation"]),
        changed(("data", "participations", 0, "status"), ["seen"]),
        changed(("data", "participations", 0, "id"), {"id": "9" * 80}),
        changed(("data", "participations", 0, "starts_at"), "9999-12-31T23:59:59-23:59"),
        changed(("data", "participations", 0, "user", "last_name"), 12),
        b"[" * 50_000 + b"]" * 50_000,
    ]
    url = "/api/v1/webhooks/rdv-insertion/055"
    with LiveServer(webhook_app) as base, httpx.Client(base_url=base, timeout=30) as http:
        for body in bodies:
            sig = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            r = http.post(url, content=body, headers={"Content-Type": "application/json", "X-RDVI-SIGNATURE": sig})
            assert r.status_code == 422, (body[:60], r.status_code, r.text)
            answer = r.json()
            assert answer["error"] == "malformed" and answer["details"]["status"] == "malformed", answer
            assert "unreadable" in answer["message"] and "Dupont" not in answer["message"]
    with session_scope(db) as s:
        kept = s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).all()
        assert [d.status for d in kept] == ["malformed"] * len(bodies)
        assert all(d.reason for d in kept) and kept[0].reason == "organisation is not an object"
        assert s.scalar(select(func.count()).select_from(OrientationEvent)) == 0
    # nothing to take yet: the code reads them no better
    replayed = run_cli(db, monkeypatch, "webhooks", "replay", "--unreadable", "--json")
    assert replayed.exit_code == 0, replayed.output
    assert json.loads(replayed.stdout) == {"055": {"still_malformed": len(bodies)}}
    # a new version reads an organisation given by its name (the fix, here applied to the reading itself)
    read_object = rdvi._object

    def fixed(value, what):
        return {"name": value} if what == "organisation" and isinstance(value, str) else read_object(value, what)

    monkeypatch.setattr(rdvi, "_object", fixed)
    replayed = run_cli(db, monkeypatch, "webhooks", "replay", "--unreadable", "--json")
    assert replayed.exit_code == 0, replayed.output
    assert json.loads(replayed.stdout) == {"055": {"now_readable": 1, "applied": 1, "still_malformed": 6}}
    again = run_cli(db, monkeypatch, "webhooks", "replay", "--unreadable", "--json")
    assert json.loads(again.stdout) == {"055": {"still_malformed": 6}}  # taken once
    with session_scope(db) as s:
        (event,) = s.scalars(select(OrientationEvent)).all()
        assert (event.type, event.presence, event.event_date, event.structure) == (
            "rdv_orientation", "present", day, "Conseil départemental de la Meuse"
        )  # fmt: skip
        assert s.get(WebhookDelivery, kept[0].id).status == "processed"
    assert run_cli(db, monkeypatch, "webhooks", "replay").exit_code == 2  # --since or --unreadable
