"""No NIR, name, token or key can reach a log line."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from app.logging import REDACTED, configure_logging, scrub

NIR = "2900555545123"
NIR15 = "290055554512345"
CORSICA = "185072A0123456"[:13]


@pytest.fixture
def log_stream():
    configure_logging("DEBUG", json_logs=True)
    stream = io.StringIO()
    handler = logging.getLogger().handlers[0]
    old = handler.stream  # type: ignore[attr-defined]
    handler.stream = stream  # type: ignore[attr-defined]
    yield stream
    handler.stream = old  # type: ignore[attr-defined]


def _lines(stream):
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_sensitive_keys_and_patterns_are_redacted(log_stream):
    log = structlog.get_logger("t")
    log.info(
        "ingest",
        nir=NIR,
        nom="DUPONT",
        prenom="Camille",
        token="abc.def",
        api_key="prsa_0123456789ab_" + "k" * 43,
        detail={"nested": {"nir": NIR, "jeton": "j"}, "note": f"person {NIR15} seen"},
        message_with_nir=f"matched {NIR}",
        corsica=f"{CORSICA}",
    )
    out = log_stream.getvalue()
    for secret in (NIR, NIR15, "DUPONT", "Camille", "abc.def", "k" * 43, CORSICA):
        assert secret not in out, secret
    line = _lines(log_stream)[-1]
    assert line["nir"] == REDACTED and line["nom"] == REDACTED
    assert line["detail"]["nested"]["nir"] == REDACTED
    assert line["detail"]["note"] == "person [REDACTED] seen"


def test_exceptions_and_stdlib_logs_are_scrubbed(log_stream):
    log = structlog.get_logger("t")
    try:
        raise ValueError(f"duplicate NIR {NIR} for Bearer eyJhbGciOi.eyJzdWIiOiJ4In0.sig")
    except ValueError:
        log.exception("failed")
    logging.getLogger("uvicorn.error").warning("client sent %s", NIR)
    out = log_stream.getvalue()
    assert NIR not in out and "eyJhbGciOi" not in out
    assert "ValueError" in out


def test_request_logs_never_carry_personal_data(client, make_api_key, log_stream):
    key = make_api_key(["admin"])
    client.post("/api/v1/me", headers={"X-API-Key": key}, json={"nir": NIR})
    client.get(f"/api/v1/unknown/{NIR}?nir={NIR}", headers={"X-API-Key": key, "Authorization": "Bearer x"})
    out = log_stream.getvalue()
    assert NIR not in out
    assert key not in out
    lines = [line for line in _lines(log_stream) if line.get("event") == "request"]
    assert lines and all("request_id" in line for line in lines)


def test_scrub_leaves_ordinary_numbers():
    assert scrub("foyer 55000012345 has 3 persons on 2024-03-01") == "foyer 55000012345 has 3 persons on 2024-03-01"


def test_database_errors_do_not_carry_values(db):
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    from app.db import get_engine

    engine = get_engine(db)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO departements (code, created_at) VALUES ('055', '2024-01-01 00:00:00')"))
    try:
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO departements (code, name, created_at) VALUES (:c, :n, '2024-01-01 00:00:00')"),
                {"c": "055", "n": "DUPONT Camille 2900555545123"},
            )
    except IntegrityError as exc:
        assert "DUPONT" not in str(exc) and "2900555545123" not in str(exc)
    else:
        raise AssertionError("the duplicate must fail")
