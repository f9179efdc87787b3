"""The committed openapi/openapi.json is the app's schema (regenerate with `passerelle openapi export`)."""

from __future__ import annotations

from pathlib import Path

from app.openapi import render_openapi

COMMITTED = Path(__file__).resolve().parents[1] / "openapi" / "openapi.json"


def test_committed_openapi_matches_the_app():
    assert COMMITTED.exists(), "run `passerelle openapi export`"
    assert COMMITTED.read_text() == render_openapi(), (
        "openapi/openapi.json is out of date: run `passerelle openapi export` and commit it"
    )


def test_openapi_declares_both_security_schemes():
    import json

    schema = json.loads(render_openapi())
    schemes = schema["components"]["securitySchemes"]
    assert {"APIKeyHeader", "HTTPBearer"} <= set(schemes)
    assert schema["paths"]["/health"]["get"].get("security") is None
