"""No NIR, name, token or key can reach a log line."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from app.logging import REDACTED, configure_logging, scrub
from tests.support.factories import weekly_departement

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


def test_no_personal_data_in_the_logs_of_the_main_jobs(xsettings, smtp, tmp_path, fake, capsys):
    """Issue #14: ingest (beneficiary and instruction flux), an orientation import, webhook deliveries,
    France Travail calls and the weekly export, all logging as they do; then every NIR, name, contact and
    jeton the database holds is looked for in what was logged."""
    import hashlib
    import hmac as hmac_lib

    from fastapi.testclient import TestClient
    from pydantic import SecretStr
    from sqlalchemy import select

    from app.db import get_engine, session_scope
    from app.exports import publish as pub
    from app.main import create_app
    from app.models import FtIdentity, InstructionRecord, Person
    from app.orientation.service import import_csv
    from app.security.nir import NirProtector
    from tests.support.ftsupport import AGENT_HEADERS, ft_settings
    from tests.support.rdv_insertion import rdv_delivery, rdvi_user

    # every handler made from here on (create_app makes its own) writes to the captured stderr, at DEBUG
    configure_logging("DEBUG", json_logs=True)
    week = weekly_departement(xsettings, tmp_path)  # generated flux with instruction files, ingested
    assert pub.publish(get_engine(xsettings), xsettings, "055", week).mailed
    protector = NirProtector(xsettings.encryption_keys, xsettings.hmac_key)
    with session_scope(xsettings) as s:
        persons = s.scalars(select(Person).where(Person.nir_encrypted.is_not(None)).limit(40)).all()
        nirs = [protector.decrypt(p.nir_encrypted) for p in persons]
        names = {n for p in persons for n in (p.nom, p.prenom) if n and len(n) >= 4}
        contacts = {c for r in s.scalars(select(InstructionRecord)) for c in (r.email, r.telephone) if c}
    assert nirs and names and contacts
    first = persons[0]
    rows = "".join(
        f"{nir};{p.date_naissance};orientation;{p.first_received_on}\n"
        for nir, p in zip(nirs[:5], persons, strict=False)
    )
    with session_scope(xsettings, write=True) as s:
        import_csv(s, xsettings, "055", "nir;date_naissance;evenement;date\n" + rows, recorded_by="test")
    secret = "s3cret-of-the-meuse-for-rdv-insertion-webhooks"
    user = rdvi_user(first_name=first.prenom, last_name=first.nom, email=sorted(contacts)[0])
    body = json.dumps(rdv_delivery(1, week.monday, "seen", [user], "created", "2024-03-12T10:00:00+01:00")).encode()
    signature = hmac_lib.new(secret.encode(), body, hashlib.sha256).hexdigest()
    hooked = xsettings.model_copy(update={"rdv_insertion_secrets": SecretStr(json.dumps({"055": secret}))})
    with TestClient(create_app(hooked)) as c:
        c.post("/api/v1/webhooks/rdv-insertion/055", content=body,
               headers={"Content-Type": "application/json", "X-Rdvi-Signature": signature})  # fmt: skip
    ft = ft_settings(xsettings, fake)
    with TestClient(create_app(ft)) as c:
        from app.admin.clients import create_client

        with session_scope(ft, write=True) as s:
            key = create_client(s, ft, name="ft-reader", departements=["055"], scopes=["ft:read", "ft:write"]).key
        for p in persons[:6]:
            c.post(f"/api/v1/persons/{p.id}/france-travail/refresh", headers={"X-API-Key": key} | AGENT_HEADERS)
    with session_scope(xsettings) as s:
        jetons = [protector.decrypt(j) for j in s.scalars(select(FtIdentity.jeton_encrypted)) if j]
    assert jetons, "France Travail was called"
    captured = capsys.readouterr()
    logged = captured.err + captured.out
    for event in ("flux_applied", "export_published", "webhook_processed", "request"):
        assert f'"event": "{event}"' in logged, event  # each job logged, through the captured handler
    for value in (*nirs, *names, *contacts, *jetons):
        assert value not in logged, f"a personal value reached the logs ({len(value)} characters)"


def test_no_credential_in_the_logs_of_an_export_a_download_and_a_webhook(xsettings, smtp, tmp_path, capsys):
    """Issue #23 item 3: the link is the credential. A weekly file published, downloaded through a real uvicorn
    (its access log on), a signed webhook delivered and a forged one refused, with credential-named query values
    on each: neither the download token, the webhook secret nor its signature, nor any of those query values
    reaches a line of the service's log or of uvicorn's access log."""
    import httpx
    from pydantic import SecretStr

    from app.db import get_engine
    from app.exports import publish as pub
    from app.main import create_app
    from tests.support.live_server import LiveServer
    from tests.support.rdv_insertion import SECRET, rdv_delivery, rdvi_user, signed
    from tests.support.smtp import links

    sink, _port = smtp
    configure_logging("DEBUG", json_logs=True)
    week = weekly_departement(xsettings, tmp_path)
    assert pub.publish(get_engine(xsettings), xsettings, "055", week).mailed
    tokens = links(sink.messages[-1])
    hooked = xsettings.model_copy(update={"rdv_insertion_secrets": SecretStr(json.dumps({"055": SECRET}))})
    query = {
        "token": "QueryTokenValue1234",
        "api_key": "QueryApiKeyValue1234",
        "client_secret": "QuerySecretValue1234",
        "signature": "QuerySignatureValue1234",
        "password": "QueryPasswordValue1234",
        "code": "QueryCodeValue1234",
        "state": "QueryStateValue1234",
        "session": "QuerySessionValue1234",
    }
    body, headers = signed(rdv_delivery(1, week.monday, "seen", [rdvi_user()], "created", "2024-03-12T10:00:00+01:00"))
    with LiveServer(create_app(hooked)) as base, httpx.Client(base_url=base, timeout=30) as http:
        assert http.get(f"/api/v1/exports/download/{tokens['flux']}", params=query).status_code == 200
        assert http.get(f"/api/v1/exports/download/{tokens['pilotage']}").status_code == 200
        assert http.get(f"/api/v1/exports/download/{tokens['flux']}x").status_code == 403  # a forged link
        hook = "/api/v1/webhooks/rdv-insertion/055"
        assert http.post(hook, content=body, headers=headers, params={"secret": SECRET}).status_code == 200
        forged = headers | {"X-Rdvi-Signature": "0" * 64}
        assert http.post(hook, content=body + b" ", headers=forged, params={"sig": SECRET}).status_code == 401
    captured = capsys.readouterr()
    logged = captured.err + captured.out
    assert '"logger": "uvicorn.access"' in logged, "uvicorn's access log was read too"
    assert '"event": "request"' in logged and "/api/v1/exports/download/" in logged
    assert "webhook_signature_refused" in logged
    for value in (*tokens.values(), SECRET, headers["X-Rdvi-Signature"], *query.values()):
        assert value not in logged, f"a credential reached the logs: {value[:6]}..."


def test_uvicorn_access_records_are_redacted_whatever_handler_formats_them(caplog):
    """The filter sits on uvicorn's access logger: a handler that is not ours (a platform's, caplog) gets the
    record already redacted; ordinary query values and paths are left as they are."""
    from app.logging import install_access_log_filter, redact_url

    install_access_log_filter()
    install_access_log_filter()  # once only
    access = logging.getLogger("uvicorn.access")
    assert sum(type(f).__name__ == "AccessLogFilter" for f in access.filters) == 1
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        target = "/api/v1/exports/download/Abc_123-xyz" + "9" * 30 + "?jeton=J1&departement=055&access_token=T1&code=C1"
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", target, "1.1", 200)
    message = caplog.records[-1].getMessage()
    assert "Abc_123" not in message and "J1" not in message and "T1" not in message and "C1" not in message
    assert f"/api/v1/exports/download/{REDACTED}?jeton={REDACTED}&departement=055" in message
    assert redact_url("/api/v1/pilotage/tables/delais?departement=055&as_of=2024-03-01&mois=2024-02") == (
        "/api/v1/pilotage/tables/delais?departement=055&as_of=2024-03-01&mois=2024-02"
    )
    assert redact_url("/x?monkey=1&key=2&x-api-key=3&state=4&sig=5") == (
        f"/x?monkey=1&key={REDACTED}&x-api-key={REDACTED}&state={REDACTED}&sig={REDACTED}"
    )
