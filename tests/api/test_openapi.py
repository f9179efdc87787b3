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
                if int(status) >= 400 and where != "GET /ready":  # the probe's own body (tests/ops/test_docs_truth.py)
                    assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
            if op.get("security"):
                assert {"401", "403", "429", "503"} <= set(op["responses"]), where
                assert "Retry-After" in op["responses"]["429"]["headers"]
                headers = {p["name"].lower() for p in op["parameters"] if p["in"] == "header"}
                assert {"x-purpose", "x-agent-identifiant", "x-agent-nom", "x-agent-prenom"} <= headers, where
    assert "text/csv" in schema["paths"]["/api/v1/pilotage/orientation"]["get"]["responses"]["200"]["content"]
    assert "text/csv" in schema["paths"]["/api/v1/audit/accesses"]["get"]["responses"]["200"]["content"]


AGENT_HEADERS = ("x-agent-identifiant", "x-agent-nom", "x-agent-prenom")


def _header_params(op: dict) -> dict[str, dict]:
    return {p["name"].lower(): p for p in op.get("parameters", []) if p["in"] == "header"}


def test_the_agent_headers_are_described_as_going_together(client, make_api_key):
    """Issue #23, item 12: OpenAPI 3 cannot make parameters depend on each other, so each agent header says
    in words that the three go together (naming them, and the 422 otherwise), carries an example, and every
    operation's 422 says so too; the three examples sent together are accepted."""
    import json

    schema = json.loads(render_openapi())
    examples = {}
    described = 0
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            params = _header_params(op)
            if not set(AGENT_HEADERS) & set(params):
                continue
            described += 1
            assert set(AGENT_HEADERS) <= set(params), (method, path)
            for name in AGENT_HEADERS:
                text = params[name]["description"]
                for other in ("X-Agent-Identifiant", "X-Agent-Nom", "X-Agent-Prenom"):
                    assert other in text, (method, path, name, other)
                assert "all three or none" in text and "invalid_agent_header" in text, (method, path, name)
                assert params[name].get("required") is False
                examples[name] = params[name]["example"]
            assert "invalid_agent_header" in op["responses"]["422"]["description"], (method, path)
    assert described >= 20
    key = make_api_key(["persons:read"])
    me = client.get("/api/v1/me", headers={"X-API-Key": key, **examples})
    assert me.status_code == 200, me.text
    assert me.json()["agent"] == {"identifiant": "A123456", "nom": "Martin", "prenom": "Lea"}


def test_a_header_value_is_accepted_exactly_when_its_documented_schema_accepts_it(client, make_api_key):
    """What the document says of X-Purpose and of the agent headers is what the service does: HTTP drops the
    spaces around a value, so a value of spaces (or, for an agent, no-break spaces) only is refused and the
    schema says so (it allowed it before: a schema-valid request answered 422)."""
    import json
    import re

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    schema = json.loads(render_openapi())
    params = _header_params(schema["paths"]["/api/v1/me"]["get"])
    rules = {name: params[name]["schema"]["anyOf"][0] for name in ("x-purpose", *AGENT_HEADERS)}
    key = make_api_key(["persons:read"])
    valid_agent = {"x-agent-identifiant": "A1", "x-agent-nom": "Martin", "x-agent-prenom": "Lea"}

    def documented(rule: dict, value: str) -> bool:
        return (
            rule.get("minLength", 0) <= len(value) <= rule["maxLength"]
            and re.search(rule["pattern"], value) is not None
        )

    for blank in (" ", "   ", "\xa0"):
        assert not documented(rules["x-agent-nom"], blank)
    assert not documented(rules["x-purpose"], "  ")

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(name=st.sampled_from(sorted(rules)), value=st.text(alphabet=" a|é\xa0\x85", min_size=1, max_size=12))
    def check(name: str, value: str) -> None:
        headers = {"X-API-Key": key, **valid_agent, name: value.encode("latin-1")}
        status = client.get("/api/v1/me", headers=headers).status_code
        assert status == (200 if documented(rules[name], value) else 422), (name, value)

    check()


def test_integer_bounds_are_integers_a_client_can_trust():
    """FastAPI wrote `le=2**63 - 1` of a body field as the float 9.223372036854776e+18 (2**63): the fuzzer sent
    2**63, valid by the document, and was answered 422. Every integer's bound is now an exact integer."""
    import json

    floats = []

    def walk(node, where):
        if isinstance(node, dict):
            if node.get("type") == "integer":
                floats.extend((where, k) for k in ("minimum", "maximum") if isinstance(node.get(k), float))
            for key, child in node.items():
                walk(child, f"{where}/{key}")
        elif isinstance(node, list):
            for i, child in enumerate(node):
                walk(child, f"{where}/{i}")

    schema = json.loads(render_openapi())
    walk(schema, "")
    assert floats == []
    supersedes = schema["components"]["schemas"]["EventIn"]["properties"]["supersedes_id"]["anyOf"][0]
    assert supersedes["maximum"] == 2**63 - 1 and supersedes["minimum"] == 1
