"""Applying flux files: all or nothing, idempotent, dated history, identity across files, NIR protection."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select, text

from app.db import get_engine, session_scope
from app.flux.loader import IngestInputError, IngestOptions, ReferenceIntegrityError, ingest_file
from app.models import FluxFile, Person, PersonState
from app.models.base import Base
from app.security.nir import NirProtector
from tests.support.factories import ingest, snapshot
from tests.support.fluxbuilder import NIR_A, NIR_B, NIR_C, foyer, person, text_of, write_flux

D1, D2, D3 = date(2024, 3, 1), date(2024, 3, 4), date(2024, 4, 2)


def states(settings, nir: str = NIR_A) -> list[PersonState]:
    protector = NirProtector(settings.encryption_keys, settings.hmac_key)
    with session_scope(settings) as s:
        pid = s.scalar(select(Person.id).where(Person.nir_hash == protector.lookup_hash(nir)))
        return list(
            s.scalars(
                select(PersonState)
                .where(PersonState.person_id == pid)
                .order_by(PersonState.received_on, PersonState.file_created_at, PersonState.seq)
            )
        )


def count(settings, model) -> int:
    with session_scope(settings) as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def test_a_daily_file_is_applied(db, tmp_path):
    path = write_flux(tmp_path, [foyer(person(), person(NIR_B, role="CJT", prenom="MARIE", sexe="2"))])
    report = ingest(db, path)
    assert report.status == "applied", report
    assert (report.foyers, report.persons_brsa, report.new_persons, report.state_changes) == (1, 2, 2, 2)
    assert report.departement == "055" and report.organisme == "CAF 551" and report.type_flux == "I"
    (state,) = states(db)
    assert (state.received_on, state.etat, state.sdd, state.role, state.matricule) == (D1, "2", True, "DEM", "0001234")
    assert (state.numcom, state.codepos) == ("55545", "55100")
    with session_scope(db) as s:
        f = s.scalar(select(FluxFile))
        assert f is not None and (f.status, f.received_on, f.foyers, f.persons) == ("applied", D1, 1, 2)


def test_the_nir_is_never_stored_in_clear(db, tmp_path):
    ingest(db, write_flux(tmp_path, [foyer(person(NIR_A, with_key=True))]))
    engine = get_engine(db)
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in conn.execute(select(table)):
                assert NIR_A not in json.dumps([str(v) for v in row]), f"NIR in clear in {table.name}"
    protector = NirProtector(db.encryption_keys, db.hmac_key)
    with session_scope(db) as s:
        p = s.scalar(select(Person))
        assert p is not None and p.nir_encrypted is not None
        assert protector.decrypt(p.nir_encrypted) == NIR_A
        assert p.nir_hash == protector.lookup_hash(NIR_A)


def test_same_content_twice_changes_nothing(db, tmp_path):
    path = write_flux(tmp_path, [foyer()])
    first = ingest(db, path)
    before = snapshot(db)
    again = ingest(db, path, received_on=D2)
    assert again.status == "duplicate" and again.duplicate_of == first.file_id
    gz = write_flux(tmp_path, [foyer()], compress=True)  # same XML, gzip wrapper
    assert ingest(db, gz, received_on=D2).status == "duplicate"
    assert snapshot(db) == before
    assert count(db, FluxFile) == 1


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda x: x.replace("<NBTOTDOSRSATRANSM>00000002<", "<NBTOTDOSRSATRANSM>00000005<"), "count_mismatch"),
        (lambda x: x[: x.rindex("<InfosFoyerRSA>") + 300], "truncated"),
        (lambda x: x.replace("<Racine>", "<Root>").replace("</Racine>", "</Root>"), "wrong_root"),
        (lambda x: x.replace("<NOM>DUPONT</NOM>", "<NOM>DUPONT</NAME>"), "malformed_xml"),
    ],
)
def test_a_rejected_file_applies_nothing_and_is_quarantined(db, tmp_path, mutate, code):
    ingest(db, write_flux(tmp_path, [foyer(person(NIR_C), matricule="0000777")], name="before.xml"))
    before = snapshot(db)
    good = text_of(write_flux(tmp_path, [foyer(), foyer(person(NIR_B), matricule="0002")]))
    bad = tmp_path / "CAF_bad.xml"
    bad.write_text(mutate(good).replace("windows-1252", "UTF-8"), encoding="utf-8")
    report = ingest(db, bad, received_on=D2)
    assert report.status == "rejected"
    assert report.error_code == code
    assert report.error_position
    assert snapshot(db) == before, "nothing of a rejected file is applied"
    quarantined = Path(report.quarantine_path or "")
    assert quarantined.read_bytes() == bad.read_bytes()
    assert json.loads(quarantined.with_name(quarantined.name + ".report.json").read_text())["error_code"] == code
    with session_scope(db) as s:
        row = s.get(FluxFile, report.file_id)
        assert row is not None and row.status == "rejected" and row.error_code == code


def test_records_with_problems_follow_the_policy(db, tmp_path):
    xml = text_of(
        write_flux(
            tmp_path,
            [
                foyer(person(), person(), matricule="0001"),  # same person twice: second rejected
                foyer(person(NIR_B, prenom="MARIE"), matricule="0002", etat="2"),  # not a homonym of foyer 1
                foyer(person(NIR_C), matricule="0003"),
            ],
        )
    )
    xml = xml.replace("<MATRICULE>0003</MATRICULE>", "")  # foyer 3: no matricule -> rejected
    xml = xml.replace("<ETATDOSRSA>2</ETATDOSRSA>", "<ETATDOSRSA>Z</ETATDOSRSA>", 1)  # unknown code: warning
    path = tmp_path / "mixed.xml"
    path.write_text(xml.replace("windows-1252", "UTF-8"), encoding="utf-8")
    report = ingest(db, path)
    assert report.status == "applied"
    assert report.persons_brsa == 2
    assert sorted(r["code"] for r in report.rejected) == ["duplicate_person", "missing_field"]
    assert [w["code"] for w in report.warnings] == ["no_initial_stock", "unknown_code"]
    assert all("foyer" in r["message"] for r in report.rejected)
    assert states(db)[0].etat == "Z", "unknown codes are stored as they are"


def test_monthly_file_repeating_everyone_adds_no_rows(db, tmp_path):
    people = [foyer(person(NIR_A), matricule="0001"), foyer(person(NIR_B, prenom="MARIE"), matricule="0002")]
    ingest(db, write_flux(tmp_path, people, type_flux="M", day=D1), initial_stock=True)
    rows = count(db, PersonState)
    report = ingest(db, write_flux(tmp_path, people, type_flux="M", day=D3), received_on=D3)
    assert report.status == "applied" and report.unchanged == 2 and report.state_changes == 0
    assert count(db, PersonState) == rows


def test_absent_from_the_next_monthly_file(db, tmp_path):
    a, b = foyer(person(NIR_A), matricule="0001"), foyer(person(NIR_B, prenom="MARIE"), matricule="0002")
    ingest(db, write_flux(tmp_path, [a, b], type_flux="M", day=D1), initial_stock=True)
    report = ingest(db, write_flux(tmp_path, [a], type_flux="M", day=D3), received_on=D3)
    assert report.absences == 1
    last = states(db, NIR_B)[-1]
    assert (last.present, last.absence_reason, last.received_on) == (False, "absent_full_file", D3)


def test_a_conjoint_leaving_the_foyer(db, tmp_path):
    dem, cjt = person(NIR_A), person(NIR_B, role="CJT", prenom="MARIE", sexe="2")
    ingest(db, write_flux(tmp_path, [foyer(dem, cjt)], day=D1))
    report = ingest(db, write_flux(tmp_path, [foyer(dem)], day=D2), received_on=D2)
    assert report.absences == 1
    assert [(s.present, s.absence_reason) for s in states(db, NIR_B)] == [(True, None), (False, "left_foyer")]
    assert [s.present for s in states(db, NIR_A)] == [True]


def test_a_person_changing_foyer_keeps_one_history(db, tmp_path):
    dem, cjt = person(NIR_A), person(NIR_B, role="CJT", prenom="MARIE", sexe="2")
    ingest(db, write_flux(tmp_path, [foyer(dem, cjt, matricule="0001")], day=D1))
    # separation: MARIE becomes DEM of her own foyer in the same file where the first foyer loses her
    moved = person(NIR_B, role="DEM", prenom="MARIE", sexe="2")
    report = ingest(
        db, write_flux(tmp_path, [foyer(dem, matricule="0001"), foyer(moved, matricule="0002")], day=D2), received_on=D2
    )
    assert report.new_persons == 0
    history = states(db, NIR_B)
    assert [(s.matricule, s.role, s.present) for s in history] == [("0001", "CJT", True), ("0002", "DEM", True)]


def test_identity_without_nir_then_with(db, tmp_path):
    ingest(db, write_flux(tmp_path, [foyer(person(None))], day=D1))
    report = ingest(db, write_flux(tmp_path, [foyer(person(NIR_A, sdd=False))], day=D2), received_on=D2)
    assert report.new_persons == 0 and report.matched_by == {"matricule": 1}
    assert count(db, Person) == 1
    assert [s.sdd for s in states(db)] == [True, False]


def test_a_new_conjoint_with_another_nir_is_another_person(db, tmp_path):
    ingest(db, write_flux(tmp_path, [foyer(person(NIR_A), person(NIR_B, role="CJT", prenom="MARIE"))], day=D1))
    other = person(NIR_C, role="CJT", prenom="LUCIE", dtnai=date(1985, 7, 1), sexe="2")
    report = ingest(db, write_flux(tmp_path, [foyer(person(NIR_A), other)], day=D2), received_on=D2)
    assert report.new_persons == 1
    assert count(db, Person) == 3
    assert states(db, NIR_B)[-1].absence_reason == "left_foyer"


def test_a_foyer_changing_organisme_keeps_history(db, tmp_path):
    ingest(db, write_flux(tmp_path, [foyer(person(NIR_A))], day=D1))
    msa = foyer(person(NIR_A), fonorg="MSA", numorg="555", matricule="9990001")
    report = ingest(db, write_flux(tmp_path, [msa], day=D2, fonorg="MSA"), received_on=D2)
    assert report.new_persons == 0 and report.matched_by == {"nir": 1}
    assert [(s.fonorg, s.matricule) for s in states(db)] == [("CAF", "0001234"), ("MSA", "9990001")]


def test_initial_stock(db, tmp_path):
    path = write_flux(tmp_path, [foyer()], type_flux="M")
    with pytest.raises(IngestInputError, match="daily"):
        ingest(db, write_flux(tmp_path, [foyer()], name="daily.xml"), initial_stock=True)
    assert ingest(db, path, initial_stock=True).status == "applied"
    with session_scope(db) as s:
        assert s.scalar(select(Person.stock)) is True
    with pytest.raises(IngestInputError, match="already has"):
        ingest(db, write_flux(tmp_path, [foyer(person(NIR_B))], type_flux="M", day=D3), D3, initial_stock=True)


def test_reception_date_checks(db, tmp_path):
    path = write_flux(tmp_path, [foyer()], day=D2)
    with pytest.raises(IngestInputError, match="before the file's creation"):
        ingest(db, path, received_on=D1)
    with pytest.raises(IngestInputError, match="future"):
        ingest(db, path, received_on=date(2999, 1, 1))
    assert count(db, FluxFile) == 0


def test_a_file_for_another_departement(db, tmp_path):
    path = write_flux(tmp_path, [foyer()], departement="054")
    report = ingest(db, path, departement="055")
    assert report.status == "rejected" and report.error_code == "other_departement"
    assert count(db, Person) == 0


def test_a_late_daily_file_is_placed_by_its_reception_date(db, tmp_path):
    ingest(db, write_flux(tmp_path, [foyer(person(NIR_A, sdd=True))], day=D2, name="later.xml"), received_on=D2)
    ingest(db, write_flux(tmp_path, [foyer(person(NIR_A, sdd=False))], day=D1, name="earlier.xml"), received_on=D1)
    assert [(s.received_on, s.sdd) for s in states(db)] == [(D1, False), (D2, True)]


def test_a_late_file_is_absent_from_a_later_monthly(db, tmp_path):
    """A daily file received before a monthly one but ingested after it: whoever it shows and the monthly
    file did not carry is absent from the monthly file's date, as if the files had come in order."""
    ingest(
        db, write_flux(tmp_path, [foyer(person(NIR_A), matricule="0001")], type_flux="M", day=D1), initial_stock=True
    )
    ingest(db, write_flux(tmp_path, [foyer(person(NIR_A), matricule="0001")], type_flux="M", day=D3), received_on=D3)
    late = write_flux(tmp_path, [foyer(person(NIR_B, prenom="MARIE"), matricule="0002")], day=D2, name="late.xml")
    report = ingest(db, late, received_on=D2)
    assert report.absences == 1
    assert [(s.received_on, s.present) for s in states(db, NIR_B)] == [(D2, True), (D3, False)]


def test_sqlite_file_or_postgres_schema_is_what_we_think(db):
    engine = get_engine(db)
    assert {"persons", "person_states", "person_keys", "flux_files"} <= set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1


def test_files_without_nir_msa_files_and_gzip_files_ingest(db, tmp_path):
    no_nir = [foyer(person(None), person(None, role="CJT", prenom="MARIE", sexe="2"), matricule="0001")]
    r1 = ingest(db, write_flux(tmp_path, no_nir, name="no_nir.xml"))
    assert (r1.status, r1.persons_brsa, r1.warnings_count) == ("applied", 2, 1)  # the no-initial-stock warning
    msa = [foyer(person(NIR_A, prenom="PAUL"), fonorg="MSA", numorg="555", matricule="7000001")]
    r2 = ingest(db, write_flux(tmp_path, msa, fonorg="MSA", name="msa.xml"))
    assert (r2.status, r2.organisme, r2.persons_brsa) == ("applied", "MSA 555", 1)
    gz = write_flux(tmp_path, [foyer(person(NIR_B, prenom="LUC"), matricule="0003")], day=D2, compress=True)
    r3 = ingest(db, gz, received_on=D2)
    assert (r3.status, r3.persons_brsa) == ("applied", 1)
    assert count(db, Person) == 4


def test_identity_of_last_resort_joins_a_person_without_nir(db, tmp_path):
    """Names + birth date is the last key: the same name and birth date, no NIR before, a NIR now."""
    ingest(db, write_flux(tmp_path, [foyer(person(None), matricule="0001")], name="a.xml"))
    report = ingest(db, write_flux(tmp_path, [foyer(person(NIR_A), matricule="0002")], day=D2), received_on=D2)
    assert report.matched_by == {"identity": 1} and count(db, Person) == 1


def test_a_record_without_nir_keeps_the_nir_known_before(db, tmp_path):
    ingest(db, write_flux(tmp_path, [foyer(person(NIR_A))], day=D1))
    ingest(db, write_flux(tmp_path, [foyer(person(None, nom="DUPONT-MARTIN"))], day=D2), received_on=D2)
    protector = NirProtector(db.encryption_keys, db.hmac_key)
    with session_scope(db) as s:
        (p,) = s.scalars(select(Person)).all()
        assert p.nom == "DUPONT-MARTIN", "a new name is taken"
        assert p.nir_hash == protector.lookup_hash(NIR_A) and protector.decrypt(p.nir_encrypted or "") == NIR_A


def _delete_person_row_only(settings, nir: str) -> None:
    """What a careless erasure would do: the person's row goes, its keys and states stay."""
    protector = NirProtector(settings.encryption_keys, settings.hmac_key)
    with get_engine(settings).begin() as conn:
        conn.execute(Person.__table__.delete().where(Person.nir_hash == protector.lookup_hash(nir)))


def test_a_key_pointing_to_a_missing_person_stops_the_ingestion(db, tmp_path):
    """The bulk tables carry no foreign keys (docs/decisions.md): the ingestion checks the references it
    builds on and applies nothing on top of a broken one."""
    ingest(db, write_flux(tmp_path, [foyer(person(None))], day=D1))
    with get_engine(db).begin() as conn:
        conn.execute(Person.__table__.delete())
    before = snapshot(db)
    with pytest.raises(ReferenceIntegrityError, match="identity key owner"):
        ingest(db, write_flux(tmp_path, [foyer(person(None, sdd=False))], day=D2), received_on=D2)
    assert snapshot(db) == before


def test_an_absence_of_a_missing_person_stops_the_ingestion(db, tmp_path):
    a, b = foyer(person(NIR_A), matricule="0001"), foyer(person(NIR_B, prenom="MARIE"), matricule="0002")
    ingest(db, write_flux(tmp_path, [a, b], type_flux="M", day=D1), initial_stock=True)
    _delete_person_row_only(db, NIR_B)
    before = snapshot(db)
    with pytest.raises(ReferenceIntegrityError, match="missing from persons"):
        ingest(db, write_flux(tmp_path, [a], type_flux="M", day=D3), received_on=D3)
    assert snapshot(db) == before


def test_every_stored_reference_resolves_after_weeks_of_files(db, tmp_path):
    """No foreign keys on the bulk tables: after weeks of generated life, every key, state and observation
    points to an existing person, and every state, observation and person to an existing file."""
    from app.flux.generator import generate
    from app.models import FluxObservation, PersonKey

    generate(tmp_path, foyers=80, days=40, start=D1, seed=3)
    engine = get_engine(db)
    for entry in json.loads((tmp_path / "manifest.json").read_text()):
        options = IngestOptions(date.fromisoformat(entry["received_on"]), initial_stock=entry["initial_stock"])
        assert ingest_file(engine, db, tmp_path / entry["file"], options).status == "applied"
    persons, files = select(Person.id), select(FluxFile.id)
    with session_scope(db) as s:
        assert s.scalar(select(func.count()).select_from(PersonKey)) > 0
        for model in (PersonKey, PersonState, FluxObservation):
            assert s.scalar(select(func.count()).where(model.person_id.not_in(persons))) == 0, model
        for column in (PersonState.file_id, FluxObservation.file_id, Person.first_file_id, Person.updated_file_id):
            assert s.scalar(select(func.count()).where(column.not_in(files))) == 0, column


def test_a_rejection_quoting_a_long_broken_tag_is_recorded_with_a_bounded_reason(db, tmp_path):
    """lxml's message repeats a broken start tag: 2,000 bytes of it must not stop the rejection from being
    recorded (PostgreSQL refused the 1,000-character column: found by the mutation test)."""
    from app.flux.loader import MAX_REASON

    bad = tmp_path / "broken.xml"
    bad.write_bytes(b'<?xml version="1.0" encoding="ISO-8859-1"?>\n<' + b"a" * 3000)
    report = ingest(db, bad)
    assert report.status == "rejected" and report.file_id is not None
    assert len(report.error) <= MAX_REASON
    with session_scope(db) as s:
        row = s.get(FluxFile, report.file_id)
        assert row is not None and row.status == "rejected" and len(row.error) <= 1000


def test_skipping_the_persons_an_initial_stock_creates_changes_no_episode(db, tmp_path):
    """The ingestion does not queue the persons an initial stock creates (their episodes are empty by rule):
    recomputing everyone afterwards must change no stored episode."""
    from app.flux.generator import generate
    from app.models import EntryEpisode
    from app.orientation.episodes import refresh_pending

    generate(tmp_path, 400, 25, date(2024, 3, 1), seed=4)
    engine = get_engine(db)
    stock_report = None
    for entry in json.loads((tmp_path / "manifest.json").read_text()):
        options = IngestOptions(date.fromisoformat(entry["received_on"]), initial_stock=entry["initial_stock"])
        report = ingest_file(engine, db, tmp_path / entry["file"], options)
        assert report.status == "applied"
        stock_report = stock_report or report
    assert stock_report.initial_stock and stock_report.episodes_refreshed < stock_report.new_persons / 10

    def episodes():
        with engine.connect() as conn:
            table = EntryEpisode.__table__
            columns = [c for c in table.c if c.name not in ("id",)]
            return sorted(tuple(r) for r in conn.execute(select(*columns)))

    before = episodes()
    assert before, "the generated files give nouveaux entrants"
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO episode_queue (person_id, departement_code) SELECT id, departement_code FROM persons")
        )
    assert refresh_pending(engine) > 0
    assert episodes() == before


@pytest.mark.parametrize("applieme", ["NRA", "NRS"])
def test_the_at_rsa_sender_is_the_caf(db, tmp_path, applieme):
    """formats/caf-flux.md: APPLIEME `CRI` Cristal (CAF), `AGO` Agora (MSA), `NRA` / `NRS` @RSA (CNAF). A file
    sent by @RSA is the CAF's as a Cristal file is: its organisme is the CAF's, nothing is reported."""
    path = write_flux(tmp_path, [foyer(person())])
    sent_by = f"<APPLIEME>{applieme}</APPLIEME>".encode()
    path.write_bytes(path.read_bytes().replace(b"<APPLIEME>CRI</APPLIEME>", sent_by))
    report = ingest(db, path)
    assert report.status == "applied", report
    assert report.organisme == "CAF 551" and report.sender_mismatches == 0
    assert not [w for w in report.warnings if w["code"] == "sender_mismatch"]
    with session_scope(db) as s:
        assert s.scalar(select(FluxFile.applieme)) == applieme


def test_a_file_whose_applieme_and_fonorg_disagree_is_reported(db, tmp_path):
    """An Agora (MSA) file whose foyers say FONORG CAF: the foyers are kept under their own FONORG, and the
    report names the first one and counts them all."""
    path = write_flux(
        tmp_path, [foyer(person()), foyer(person(NIR_B, nom="MARTIN"), matricule="0005678")], fonorg="CAF"
    )
    path.write_bytes(path.read_bytes().replace(b"<APPLIEME>CRI</APPLIEME>", b"<APPLIEME>AGO</APPLIEME>"))
    report = ingest(db, path)
    assert report.status == "applied", report
    assert report.sender_mismatches == 2
    (warning,) = [w for w in report.warnings if w["code"] == "sender_mismatch"]
    assert warning["message"].startswith("foyer 1: FONORG CAF but the file was sent by APPLIEME AGO (MSA)")
    assert report.organisme == "CAF 551"
