"""Docs that tell the truth (issue #26): the README's exit codes and architecture, ReDoc without a CDN,
the probes' answers in the OpenAPI document as the service sends them."""

from __future__ import annotations

import json
import re
from pathlib import Path

from app.errors import ExitCode

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_readme_lists_every_exit_code() -> None:
    rows = re.findall(r"^\| (\d) \| ", README, flags=re.M)
    assert sorted(int(code) for code in rows) == sorted(int(code) for code in ExitCode)


def test_the_readme_architecture_names_every_package_and_module_of_app() -> None:
    block = README.split("## Architecture", 1)[1].split("```", 2)[1]
    shown = set(re.findall(r"([a-z_]+)/", block)) | set(re.findall(r"([a-z_]+)\.py", block))
    app_dir = ROOT / "app"
    present = {p.name for p in app_dir.iterdir() if p.is_dir() and not p.name.startswith("__")}
    present |= {p.stem for p in app_dir.glob("*.py") if not p.name.startswith("__")}
    assert len(present) > 20
    assert sorted(present - shown) == [] and sorted(shown & present) == sorted(present)


def test_redoc_loads_nothing_from_outside(client) -> None:
    page = client.get("/redoc")
    assert page.status_code == 200
    scripts = re.findall(r'<script src="([^"]+)"', page.text)
    assert scripts == ["/redoc/redoc.standalone.js"]
    script = client.get(scripts[0])
    assert script.status_code == 200 and len(script.content) > 100_000
    assert script.headers["content-type"].startswith("text/javascript")
    # Redocly's logo came from its CDN, which the page's own policy (img-src 'self') blocked.
    assert "cdn.redoc.ly" not in script.text and "redocly logo" not in script.text
    assert "img-src 'self' data:" in page.headers["content-security-policy"]


def _schema(document: dict, response: dict) -> dict:
    ref = response["content"]["application/json"]["schema"]["$ref"]
    return document["components"]["schemas"][ref.rsplit("/", 1)[1]]


def _conforms(body: dict, schema: dict) -> bool:
    properties = schema["properties"]
    return set(body) == set(schema["required"]) == set(properties) and all(
        body[name] in properties[name].get("enum", [body[name]]) for name in body
    )


def test_the_probes_answers_are_the_documented_ones(client, tmp_path) -> None:
    from fastapi.testclient import TestClient

    from app.db import dispose_engines
    from app.main import create_app
    from tests.support.database import Database, make_settings

    document = json.loads((ROOT / "openapi" / "openapi.json").read_text(encoding="utf-8"))
    health = document["paths"]["/health"]["get"]["responses"]
    ready = document["paths"]["/ready"]["get"]["responses"]
    assert set(health) == {"200"} and set(ready) == {"200", "503"}
    assert _conforms(client.get("/health").json(), _schema(document, health["200"]))
    answer = client.get("/ready")
    assert answer.status_code == 200 and _conforms(answer.json(), _schema(document, ready["200"]))
    # A database not migrated: the real 503, in the documented shape.
    db = Database(tmp_path, "docs_pending")
    try:
        with TestClient(create_app(make_settings(db.url, tmp_path))) as c:
            unready = c.get("/ready")
        assert unready.status_code == 503
        assert unready.json() == {"status": "unavailable", "database": "migrations pending"}
        assert _conforms(unready.json(), _schema(document, ready["503"]))
    finally:
        dispose_engines()
        db.drop()
