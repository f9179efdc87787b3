"""The committed openapi/openapi.json is the app's schema (regenerate with `passerelle openapi export`)."""

from __future__ import annotations

from pathlib import Path

from app.main import render_openapi

COMMITTED = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


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


def test_every_operation_is_described_with_its_real_errors_and_an_example_body():
    """Issue #14: descriptions, an example for every body, the error body the service sends (never FastAPI's
    {"detail": [...]}), the statuses where they happen, CSV declared, the agent and purpose headers."""
    import json

    schema = json.loads(render_openapi())
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert set(schema["components"]["schemas"]["Error"]["required"]) == {"error", "message", "details"}
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            assert op.get("summary") and op.get("description"), where
            for media, body in op.get("requestBody", {}).get("content", {}).items():
                assert "example" in body or "examples" in body, (where, media)
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
            if op.get("security"):
                assert {"401", "403", "429", "503"} <= set(op["responses"]), where
                assert "Retry-After" in op["responses"]["429"]["headers"]
                headers = {p["name"].lower() for p in op["parameters"] if p["in"] == "header"}
                assert {"x-purpose", "x-agent-identifiant", "x-agent-nom", "x-agent-prenom"} <= headers, where
    assert "text/csv" in schema["paths"]["/api/v1/pilotage/orientation"]["get"]["responses"]["200"]["content"]
    assert "text/csv" in schema["paths"]["/api/v1/audit/accesses"]["get"]["responses"]["200"]["content"]
