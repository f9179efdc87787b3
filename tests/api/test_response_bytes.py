"""The reads that serialise their response model in the handler's thread (`app.api.deps.model_response`,
issue #27) answer the bytes FastAPI itself sends for a `response_model`: its `dump_json` by alias, as
`application/json`; and the routes keep their `response_model` (the OpenAPI document: test_openapi)."""

from __future__ import annotations

from pydantic import TypeAdapter

from app.api.orientation import Worklist
from app.api.persons import PersonOut, SearchResult
from tests.support.factories import nouvel_entrant
from tests.support.fluxbuilder import NIR_A


def test_a_person_the_worklist_and_a_search_answer_fastapis_bytes(client, db, make_api_key, tmp_path):
    pid, _t0 = nouvel_entrant(db, tmp_path)
    headers = {"X-API-Key": make_api_key(["persons:read"])}
    answers = [
        (client.get(f"/api/v1/persons/{pid}", headers=headers), PersonOut),
        (client.get("/api/v1/worklist", headers=headers), Worklist),
        (client.post("/api/v1/persons/search", headers=headers, json={"nir": NIR_A}), SearchResult),
        (client.post("/api/v1/persons/search", headers=headers, json={"nir": "1" + NIR_A[1:]}), SearchResult),
    ]
    for r, model in answers:
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json", r.headers
        adapter = TypeAdapter(model)  # what FastAPI's response field serialises with
        assert r.content == adapter.dump_json(adapter.validate_json(r.content), by_alias=True), model
    assert answers[0][0].json()["id"] == pid and answers[1][0].json()["total"] == 1
    assert [p["id"] for p in answers[2][0].json()["items"]] == [pid]
