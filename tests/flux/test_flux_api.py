"""The flux and persons over HTTP: upload, reports, persons by id and search, access records, départements."""

from __future__ import annotations

from sqlalchemy import select

from app.db import session_scope
from app.models import AccessRecord
from tests.support.fluxbuilder import NIR_A, NIR_B, foyer, person, write_flux
from tests.support.helpers import upload_flux


def test_upload_list_and_report(client, make_api_key, tmp_path):
    key = make_api_key(["flux:write"])
    path = write_flux(tmp_path, [foyer(person(), person(NIR_B, role="CJT", prenom="MARIE"))], type_flux="M")
    r = upload_flux(client, key, path, received_on="2024-03-01", initial_stock="true")
    assert r.status_code == 201, r.text
    report = r.json()
    assert report["status"] == "applied" and report["persons_brsa"] == 2 and report["initial_stock"] is True

    again = upload_flux(client, key, path, received_on="2024-03-02")
    assert again.status_code == 200 and again.json()["status"] == "duplicate"

    listing = client.get("/api/v1/flux", headers={"X-API-Key": key}).json()
    assert listing["total"] == 1 and listing["items"][0]["filename"] == path.name
    detail = client.get(f"/api/v1/flux/{report['file_id']}", headers={"X-API-Key": key}).json()
    assert detail["report"]["new_persons"] == 2


def test_rejected_upload_is_422_with_the_report(client, make_api_key, tmp_path):
    key = make_api_key(["flux:write"])
    bad = tmp_path / "bad.xml"
    bad.write_text("<Racine><IdentificationFlux>", encoding="utf-8")
    r = upload_flux(client, key, bad, received_on="2024-03-01")
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "flux_rejected" and "bad.xml" in body["message"]
    assert body["details"]["error_code"] == "truncated"
    rejected = client.get("/api/v1/flux?status=rejected", headers={"X-API-Key": key}).json()
    assert rejected["total"] == 1


def test_upload_input_errors(client, make_api_key, tmp_path):
    key = make_api_key(["flux:write"])
    path = write_flux(tmp_path, [foyer()])
    assert upload_flux(client, key, path, received_on="2999-01-01").status_code == 422
    assert upload_flux(client, key, path, received_on="not-a-date").status_code == 422
    assert upload_flux(client, key, path, departement="054").status_code == 404
    no_file = client.post("/api/v1/flux", headers={"X-API-Key": key}, files={"other": ("x", b"x")})
    assert no_file.status_code == 422


def test_person_read_search_and_access_records(client, make_api_key, tmp_path, db):
    writer = make_api_key(["flux:write"])
    upload_flux(client, writer, write_flux(tmp_path, [foyer(person(NIR_A, with_key=True))]), received_on="2024-03-01")
    reader = make_api_key(["persons:read"])
    headers = {"X-API-Key": reader, "X-Agent-Identifiant": "AG7", "X-Agent-Nom": "Durand", "X-Agent-Prenom": "Ana"}

    found = client.post("/api/v1/persons/search", headers=headers, json={"nir": NIR_A})
    assert found.status_code == 200, found.text
    (item,) = found.json()["items"]
    assert item["identite"]["nom"] == "DUPONT" and item["identite"]["nir_connu"] is True
    assert NIR_A not in found.text, "the NIR is never returned"

    pid = item["id"]
    detail = client.get(f"/api/v1/persons/{pid}", headers=headers).json()
    assert detail["etat_actuel"]["etat_dossier"] == "2"
    assert detail["etat_actuel"]["soumis_droits_devoirs"] is True
    assert detail["historique"][0]["fichier"]["type"] == "I"
    assert detail["historique"][0]["received_on"] == "2024-03-01"

    by_matricule = client.post(
        "/api/v1/persons/search",
        headers=headers,
        json={"fonorg": "CAF", "numorg": "551", "matricule": "0001234", "role": "DEM"},
    )
    assert [p["id"] for p in by_matricule.json()["items"]] == [pid]
    nobody = client.post("/api/v1/persons/search", headers=headers, json={"nir": NIR_B, "date_naissance": "1990-01-01"})
    assert nobody.json()["items"] == []

    with session_scope(db) as s:
        records = s.scalars(
            select(AccessRecord).where(AccessRecord.action.like("person.%")).order_by(AccessRecord.id)
        ).all()
        assert [(r.action, r.person_id, r.found, r.agent_identifiant) for r in records] == [
            ("person.search", pid, True, "AG7"),
            ("person.read", pid, True, "AG7"),
            ("person.search", pid, True, "AG7"),
            ("person.search", None, False, "AG7"),
        ]


def test_search_input_errors(client, make_api_key):
    key = make_api_key(["persons:read"])
    h = {"X-API-Key": key}
    assert client.post("/api/v1/persons/search", headers=h, json={"nir": "123"}).status_code == 422
    assert client.post("/api/v1/persons/search", headers=h, json={"nir": "2900555545199"[:12] + "X"}).status_code == 422
    assert client.post("/api/v1/persons/search", headers=h, json={"matricule": "1"}).status_code == 422
    assert client.post("/api/v1/persons/search", headers=h, json={"unknown": 1}).status_code == 422
    # GET is not the search: the path is /persons/{person_id}, and "search" is not an id
    assert client.get("/api/v1/persons/search", headers=h).status_code == 422
    assert client.get("/api/v1/persons/abc", headers=h).status_code == 422


def test_another_departements_records_are_404(client, make_api_key, tmp_path):
    writer = make_api_key(["flux:write"], ["055"])
    r = upload_flux(client, writer, write_flux(tmp_path, [foyer()]), received_on="2024-03-01")
    file_id = r.json()["file_id"]
    mine = make_api_key(["persons:read"], ["055"])
    pid = client.post("/api/v1/persons/search", headers={"X-API-Key": mine}, json={"nir": NIR_A}).json()["items"][0][
        "id"
    ]

    other = make_api_key(["persons:read", "flux:write"], ["054"])
    h = {"X-API-Key": other}
    assert client.get(f"/api/v1/persons/{pid}", headers=h).status_code == 404
    assert client.get(f"/api/v1/persons/{pid + 999}", headers=h).status_code == 404, "same answer as absent"
    assert client.get(f"/api/v1/flux/{file_id}", headers=h).status_code == 404
    assert client.post("/api/v1/persons/search", headers=h, json={"nir": NIR_A}).json()["items"] == []
    assert client.get("/api/v1/flux", headers=h).json()["total"] == 0
