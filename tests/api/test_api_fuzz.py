"""Schemathesis against our own OpenAPI document with every check (issue #14, "an API contract that tells the
truth"): status codes, content types, response schemas and headers as documented, `Allow` on 405, missing
required headers, authentication really required, valid data accepted and invalid data rejected, and no
server error. Positive and negative cases, on SQLite and PostgreSQL.

Two things a JSON schema cannot say are checked here by name instead of by Schemathesis:
- a 5xx is allowed only where it says a partner or a setting is missing (`SERVER_SIDE`);
- schema-valid data may still be refused by a rule between fields or about a file's content, each one listed
  in `SEMANTIC` with the words of its message (the operation's description says the rule).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis import checks as C

from app.security.scopes import ALL_SCOPES

CHECKS = [
    C.status_code_conformance,
    C.content_type_conformance,
    C.response_schema_conformance,
    C.response_headers_conformance,
    C.negative_data_rejection,
    C.missing_required_header,
    C.unsupported_method,
    C.ignored_auth,
    C.use_after_free,
    C.ensure_resource_availability,
    C.allow_header_conformance,
]
SERVER_SIDE = {"france_travail_not_configured", "exports_not_configured"}
SEMANTIC = {
    "invalid_input": (
        "is before",  # until < since, to < from
        "longer than",  # a period of more than ten years
        "does not take",  # a field that does not belong to the event's type
        "needs",  # a field the event's type requires
        "together",  # search by NIR, or by organisme + matricule + role
        "or the matricule and role",  # an event's person: by NIR, or by matricule + role
        "goes with the nir",  # an event's person: a birth date only with a NIR
        "check key",  # a 15-character NIR whose key does not match
        "or both from and to",  # a pilotage period: one of from/to without the other
        "ends before it starts",  # a pilotage period backwards
        "no ISO week",  # 2023-W53: a year with 52 weeks
        "before 1900",  # a pilotage period or dashboard month before there was any RSA
        "avant 1900",  # the dashboard's twelve months would start before 1900
        "ends after",  # a pilotage period after 2999-12-31 (app.kit.validation.LAST_DAY)
        "a date between",  # any date of a query or a form: 1900-01-01 to 2999-12-31 (OpenAPI cannot say it)
        "commence après",  # the dashboard's month starts after its as_of date
        "in the future",  # a flux's reception date after today (the clock's, not the schema's)
    ),
    "flux_rejected": ("",),  # a flux file's content (its report says where)
    "return_file_rejected": ("",),  # France Travail's return file's content
    "agent_required": ("",),  # France Travail calls need the acting agent
}


# X-Agent-Identifiant, -Nom and -Prenom go together, all three or none (422 `invalid_agent_header` otherwise).
# OpenAPI 3 cannot say so of parameters (docs/decisions.md, "The agent headers"): each one's description says
# it, and here a positive case sends what a client reading them sends, the three or none. A positive case
# refused for its agent headers is then a failure, not a rule between fields.
AGENT_HEADERS = {"x-agent-identifiant": "A123456", "x-agent-nom": "Martin", "x-agent-prenom": "Lea"}


def _agent_headers_together(case: Any) -> Any:
    given = {name for name in case.headers or {} if name.lower() in AGENT_HEADERS}
    if given and len(given) < len(AGENT_HEADERS):
        present = {name.lower() for name in given}
        case.headers.update({name: value for name, value in AGENT_HEADERS.items() if name not in present})
    return case


# How many requests: 500 by default (a quick run), more in CI (.ci/run sets PASSERELLE_FUZZ_EXAMPLES).
EXAMPLES = int(os.environ.get("PASSERELLE_FUZZ_EXAMPLES", "500"))


def _semantic(body: dict) -> bool:
    return any(words in body.get("message", "") for words in SEMANTIC.get(body.get("error", ""), ()))


@pytest.mark.slow
def test_the_api_does_what_its_document_says(db, make_api_key):
    from app.main import create_app

    # Its authentication probes (no key, a wrong one) and random download links all come from one address:
    # past `max_refused_per_minute` they would be answered 429 (tests/audit/test_refusals.py), not 401.
    app = create_app(db.model_copy(update={"max_refused_per_minute": 0}))
    key = make_api_key(sorted(ALL_SCOPES), name="fuzzer")
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    seen: set[str] = set()

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data):
        operation = data.draw(st.sampled_from(operations))
        mode = data.draw(st.sampled_from([GenerationMode.POSITIVE, GenerationMode.NEGATIVE]))
        strategy = operation.as_strategy(generation_mode=mode)
        if mode is GenerationMode.POSITIVE:
            strategy = strategy.map(_agent_headers_together)
        case = data.draw(strategy)
        response = case.call_and_validate(headers={"X-API-Key": key}, checks=CHECKS)
        seen.add(f"{case.method} {case.path}")
        where = (case.method, case.path, response.status_code, response.text[:300])
        if response.status_code >= 500:
            assert response.json().get("error") in SERVER_SIDE, where
        if response.status_code >= 400:
            assert {"error", "message", "details"} <= set(response.json()), where
        if mode is GenerationMode.POSITIVE and response.status_code in (400, 422):
            assert _semantic(response.json()), where

    check()
    assert len(seen) >= len(operations) * 3 // 4, sorted(seen)
