"""The instruction flux (issue #10): recognised by NATFLUX, its contacts, consents, SuiviAppuiOrientation,
parcours and DSP attached to the right person whichever comes first, dated by reception; contacts never
logged and given for France Travail only with consent. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from datetime import date

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from app.db import get_engine, session_scope
from app.flux.instruction_facts import france_travail_contacts
from app.flux.loader import IngestOptions, ingest_file
from app.models import FluxFile, InstructionRecord, Person
from tests.support.factories import snapshot
from tests.support.fluxbuilder import NIR_A, NIR_B, foyer, person, write_flux, write_instruction
from tests.support.mutations import apply, mutation

D1, D2, D3 = date(2024, 3, 1), date(2024, 3, 4), date(2024, 3, 11)
COUPLE = (person(NIR_A), person(NIR_B, role="CJT", nom="MARTIN", prenom="ANNE", sexe="2", dtnai=date(1985, 6, 2)))


def _dir(base, name):
    path = base / name
    path.mkdir(exist_ok=True)
    return path


def _ingest(db, path, day, **kw):
    return ingest_file(get_engine(db), db, path, IngestOptions(day, **kw))


def _records(db):
    with session_scope(db) as s:
        return {
            (r.person_id, r.role, r.received_on, r.telephone_consent, r.email_consent, r.parcours_calcule)
            for r in s.scalars(select(InstructionRecord))
        }


def _person_ids(db):
    with session_scope(db) as s:
        return {p.nom: p.id for p in s.scalars(select(Person))}


def test_an_instruction_flux_before_the_first_beneficiary_record_is_attached_when_it_comes(db, tmp_path):
    instruction = write_instruction(_dir(tmp_path, "i"), [foyer(*COUPLE)], day=D1)
    report = _ingest(db, instruction, D1)
    assert report.status == "applied" and report.nature == "I", report.to_dict()
    assert (report.instruction_attached, report.instruction_kept_aside, report.persons_brsa) == (0, 2, 2)
    with session_scope(db) as s:
        assert s.scalar(select(func.count()).select_from(Person)) == 0, "an instruction flux creates nobody"
        assert s.scalar(select(FluxFile.nature)) == "I"
    beneficiary = write_flux(_dir(tmp_path, "b"), [foyer(*COUPLE)], day=D2)
    report = _ingest(db, beneficiary, D2)
    assert report.status == "applied" and report.instruction_attached == 2
    ids = _person_ids(db)
    assert _records(db) == {
        (ids["DUPONT"], "DEM", D1, "A", "A", "PRO"),
        (ids["MARTIN"], "CJT", D1, "A", "A", "PRO"),
    }


def test_an_instruction_flux_after_the_beneficiary_record_is_attached_at_once(db, tmp_path):
    assert _ingest(db, write_flux(_dir(tmp_path, "b"), [foyer(*COUPLE)], day=D1), D1).status == "applied"
    report = _ingest(db, write_instruction(_dir(tmp_path, "i"), [foyer(*COUPLE)], day=D2), D2)
    assert (report.instruction_attached, report.instruction_kept_aside) == (2, 0)
    ids = _person_ids(db)
    assert {(pid, received) for pid, _r, received, *_ in _records(db)} == {(ids["DUPONT"], D2), (ids["MARTIN"], D2)}


def test_a_refused_consent_keeps_the_contact_out_of_what_france_travail_gets(db, tmp_path):
    """The generator's third demand refuses the telephone (AUTORUTITEL I) and accepts the e-mail."""
    foyers = [foyer(person(NIR_A), matricule="0001111"), foyer(person(None, nom="PETIT"), matricule="0002222")]
    foyers.append(foyer(person(NIR_B, nom="MARTIN", prenom="ANNE", sexe="2"), matricule="0003333"))
    assert _ingest(db, write_flux(_dir(tmp_path, "b"), foyers, day=D1), D1).status == "applied"
    path = write_instruction(_dir(tmp_path, "i"), foyers, day=D2)
    text = path.read_text(encoding="windows-1252")
    assert text.count("<AUTORUTITEL>I</AUTORUTITEL>") == 1
    assert _ingest(db, path, D2).status == "applied"
    ids = _person_ids(db)
    with get_engine(db).connect() as conn:
        refused = france_travail_contacts(conn, ids["MARTIN"])
        accepted = france_travail_contacts(conn, ids["DUPONT"])
        unknown = france_travail_contacts(conn, 10**9)
    assert refused["telephone"] is None and refused["courriel"] is not None
    assert accepted["telephone"] is not None and accepted["courriel"] is not None
    assert unknown == {"telephone": None, "courriel": None}


def test_a_flux_of_another_nature_is_rejected_naming_it(db, tmp_path):
    for nature, expected in (("R", "nouveau recueil"), ("X", "unknown nature"), (None, "NATFLUX is missing")):
        path = write_flux(_dir(tmp_path, f"n{nature}"), [foyer()], day=D1)
        raw = path.read_text(encoding="windows-1252")
        raw = raw.replace("<NATFLUX>D</NATFLUX>", f"<NATFLUX>{nature}</NATFLUX>" if nature else "")
        path.write_text(raw, encoding="windows-1252")
        report = _ingest(db, path, D1, departement="055")
        assert report.status == "rejected" and report.error_code == "other_nature", report.to_dict()
        assert expected in (report.error or "")
    with session_scope(db) as s:
        assert s.scalar(select(func.count()).select_from(Person)) == 0


def test_contacts_never_reach_a_log_or_a_report(db, tmp_path, capsys):
    from app.logging import configure_logging

    configure_logging("DEBUG", json_logs=True)
    assert _ingest(db, write_flux(_dir(tmp_path, "b"), [foyer(*COUPLE)], day=D1), D1).status == "applied"
    path = write_instruction(_dir(tmp_path, "i"), [foyer(*COUPLE)], day=D2)
    phone = re.search(r"<NUMTEL>(\d+)</NUMTEL>", path.read_text(encoding="windows-1252")).group(1)
    email = re.search(r"<ADRELEC>([^<]+)</ADRELEC>", path.read_text(encoding="windows-1252")).group(1)
    # and a malformed pair, which the report flags without quoting
    path.write_text(
        path.read_text(encoding="windows-1252").replace(phone, "06 12 AB").replace(email, "jean.dupont@"),
        encoding="windows-1252",
    )
    report = _ingest(db, path, D2)
    assert report.status == "applied"
    flags = [w["message"] for w in report.warnings if w["code"] == "invalid_contact"]
    assert flags == ["demand 1: telephone malformed", "demand 1: e-mail malformed"]
    captured = capsys.readouterr()
    logs = captured.err + captured.out
    assert "instruction_flux_applied" in logs
    dumped = json.dumps(report.to_dict())
    for secret in ("06 12 AB", "jean.dupont@", phone, email):
        assert secret not in logs and secret not in dumped
    with session_scope(db) as s:
        kept = s.scalars(select(InstructionRecord.telephone)).all()
        assert kept == ["06 12 AB", "06 12 AB"]  # kept as received, never "corrected"
        assert "06 12 AB" not in json.dumps(s.scalar(select(FluxFile.report).where(FluxFile.nature == "I")))


def test_the_person_page_shows_the_instruction_to_persons_read(client, db, make_api_key, tmp_path):
    assert _ingest(db, write_flux(_dir(tmp_path, "b"), [foyer(*COUPLE)], day=D1), D1).status == "applied"
    assert _ingest(db, write_instruction(_dir(tmp_path, "i"), [foyer(*COUPLE)], day=D2), D2).status == "applied"
    key = make_api_key(["persons:read"])
    pid = _person_ids(db)["DUPONT"]
    body = client.get(f"/api/v1/persons/{pid}", headers={"X-API-Key": key}).json()
    shown = body["instruction"]
    assert shown["recu_le"] == D2.isoformat() and shown["parcours"]["calcule"] == "PRO"
    assert shown["contacts"]["telephone_consentement"] == "A" and shown["contacts"]["courriel"].endswith("@exemple.fr")
    assert shown["dsp"]["NIVETU"] == ["1205"] and "LIBAUTRDIFSOC" not in shown["dsp"]  # codes, no free text
    assert client.get(f"/api/v1/persons/{pid}", headers={"X-API-Key": make_api_key(["flux:write"])}).status_code == 403


def test_a_bad_instruction_file_is_rejected_whole_and_changes_nothing(db, tmp_path):
    assert _ingest(db, write_flux(_dir(tmp_path, "b"), [foyer(*COUPLE)], day=D1), D1).status == "applied"
    before = snapshot(db)
    good = write_instruction(_dir(tmp_path, "i"), [foyer(*COUPLE), foyer(person(None), matricule="0009999")], day=D2)
    text = good.read_text(encoding="windows-1252")
    cases = {
        "truncated": text[: len(text) // 2],
        "count_mismatch": text.replace("<NBTOTDOSRSATRANSM>00000002", "<NBTOTDOSRSATRANSM>00000003"),
        "other_departement": text.replace("<IDEPARTE>055</IDEPARTE>", "<IDEPARTE>054</IDEPARTE>", 1),
    }
    for code, content in cases.items():
        bad = tmp_path / f"{code}.xml"
        bad.write_text(content, encoding="windows-1252")
        report = _ingest(db, bad, D2)
        assert report.status == "rejected" and report.error_code == code, report.to_dict()
        after = snapshot(db)
        after.pop("flux_files", None)
        assert after == before


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(mutation, min_size=1, max_size=3))
def test_mutated_instruction_files_are_applied_or_cleanly_rejected(db, tmp_path_factory, mutations):
    from tests.support.database import truncate

    tmp = tmp_path_factory.mktemp("ifuzz")
    truncate(db)
    assert _ingest(db, write_flux(_dir(tmp, "b"), [foyer(*COUPLE)], day=D1), D1).status == "applied"
    before = snapshot(db)
    data = write_instruction(_dir(tmp, "i"), [foyer(*COUPLE)], day=D2).read_bytes()
    for m in mutations:
        data = apply(data, m)
    path = tmp / "mutated.xml"
    path.write_bytes(data)
    try:
        report = _ingest(db, path, D2, departement="055")
    except Exception as exc:  # an option error is the only exception allowed, and it changes nothing
        from app.flux.loader import IngestInputError

        assert isinstance(exc, IngestInputError), repr(exc)
        report = None
    if report is None or report.status != "applied":
        after = snapshot(db)
        assert after == before


def test_generated_instruction_files_match_the_beneficiary_files_and_all_attach(db, tmp_path):
    """`flux generate --instruction`: an instruction flux for each day's new demands, the beneficiary files
    unchanged by the option; ingested in reception order or instruction files first, every record ends
    attached to its person."""
    from app.flux.generator import generate
    from tests.support.database import truncate

    plain = generate(tmp_path / "plain", 400, 12, D1, seed=4)
    files = generate(tmp_path / "with", 400, 12, D1, seed=4, instruction=True)
    assert [f.path.read_bytes() for f in plain] == [f.path.read_bytes() for f in files if f.nature == "D"]
    instructions = [f for f in files if f.nature == "I"]
    assert instructions and all(
        f.path.name.startswith("CAF_551_INSTRUCTION") or "MSA" in f.path.name for f in instructions
    )
    stock = [f for f in files if f.initial_stock]
    rest = [f for f in files if not f.initial_stock]
    for order in (rest, instructions + [f for f in rest if f.nature == "D"]):
        truncate(db)
        for f in stock + order:
            report = _ingest(db, f.path, f.received_on, initial_stock=f.initial_stock)
            assert report.status == "applied", report.to_dict()
        with session_scope(db) as s:
            total = s.scalar(select(func.count()).select_from(InstructionRecord))
            waiting = s.scalar(select(func.count()).where(InstructionRecord.person_id.is_(None)))
        assert total == sum(f.persons for f in instructions) and waiting == 0


def test_an_instruction_flux_uploaded_over_http(client, db, make_api_key, tmp_path):
    """The same file through `POST /api/v1/flux`: recognised by its nature, its report says so, and a file
    of another nature is refused with its name."""
    key = make_api_key(["flux:write"])
    path = write_instruction(_dir(tmp_path, "i"), [foyer(*COUPLE)], day=D1)
    with path.open("rb") as fh:
        r = client.post(
            "/api/v1/flux",
            headers={"X-API-Key": key},
            files={"file": (path.name, fh, "application/xml")},
            data={"received_on": D1.isoformat()},
        )
    assert r.status_code == 201, r.text
    body = r.json()
    report = body.get("report", body)
    assert (report["nature"], report["instruction_kept_aside"]) == ("I", 2)
    assert "0600007919" not in r.text and "exemple.fr" not in r.text
    other = write_flux(_dir(tmp_path, "x"), [foyer()], day=D1)
    other.write_text(
        other.read_text(encoding="windows-1252").replace("<NATFLUX>D<", "<NATFLUX>R<"), encoding="windows-1252"
    )
    with other.open("rb") as fh:
        refused = client.post(
            "/api/v1/flux",
            headers={"X-API-Key": key},
            files={"file": (other.name, fh, "application/xml")},
            data={"received_on": D1.isoformat()},
        )
    assert refused.status_code == 422 and "nouveau recueil" in refused.text


def test_an_instruction_flux_and_a_beneficiary_file_applied_at_the_same_time(db, tmp_path):
    """Two writers at once (cron's watcher and an upload): each file waits for the other, none fails, and
    the instruction records end attached whichever committed first."""
    import threading

    from app.flux.generator import FluxGenerator

    gen = FluxGenerator(600, D1, seed=11)
    beneficiary = gen.write_file(_dir(tmp_path, "b"), gen.foyers, "I", "CAF", D1, D1).path
    instruction = gen.write_instruction_file(_dir(tmp_path, "i"), gen.foyers[:50], D1, D1).path
    reports: dict[str, object] = {}

    def run(name, path):
        try:
            reports[name] = _ingest(db, path, D1)
        except BaseException as exc:  # said by the assertion below
            reports[name] = exc

    threads = [threading.Thread(target=run, args=(n, p)) for n, p in (("b", beneficiary), ("i", instruction))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(getattr(r, "status", None) == "applied" for r in reports.values()), reports
    with session_scope(db) as s:
        assert s.scalar(select(func.count()).where(InstructionRecord.person_id.is_(None))) == 0
        assert s.scalar(select(func.count()).select_from(InstructionRecord)) > 0
