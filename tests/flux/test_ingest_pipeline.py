"""The child-process reader gives the same result as the inline one, and its rejections are the same."""

from __future__ import annotations

import json
import marshal
import multiprocessing
import re
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import select

from app.db import get_engine
from app.flux.derive import STATE_COLUMNS, Deriver, fingerprint
from app.flux.generator import generate
from app.flux.loader import IngestOptions, ingest_file
from app.flux.reader import FluxReader
from app.models import Person, PersonState
from tests.support.database import truncate
from tests.support.factories import snapshot
from tests.support.fluxbuilder import NIR_A, NIR_B, foyer, person, text_of, write_flux, write_instruction


def _facts(settings) -> dict[str, list[tuple]]:
    """Every stored fact, but the NIR ciphertext (its nonce is random: the same NIR never encrypts twice the
    same) and the département's creation time."""
    facts = snapshot(settings)
    facts.pop("departements")
    at = list(Person.__table__.columns.keys()).index("nir_encrypted")
    facts["persons"] = [row[:at] + row[at + 1 :] for row in facts["persons"]]
    return facts


def _ingest_all(settings, directory: Path, parallel: bool) -> list[str]:
    engine = get_engine(settings)
    statuses = []
    for entry in json.loads((directory / "manifest.json").read_text()):
        options = IngestOptions(
            date.fromisoformat(entry["received_on"]), initial_stock=entry["initial_stock"], parallel=parallel
        )
        statuses.append(ingest_file(engine, settings, directory / entry["file"], options).status)
    return statuses


@pytest.mark.slow
def test_parallel_reading_applies_the_same_facts(db, tmp_path):
    """Weeks of generated life (suspensions, closures, transfers, conjoints, persons without NIR, events),
    ingested once read inline and once read by the child process: the very same rows."""
    generate(tmp_path, foyers=80, days=24, start=date(2024, 3, 1), seed=5)
    inline = _ingest_all(db, tmp_path, parallel=False)
    facts_inline = _facts(db)
    truncate(db)
    parallel = _ingest_all(db, tmp_path, parallel=True)
    assert parallel == inline and set(inline) == {"applied"}
    assert len(facts_inline["person_states"]) > 100
    assert _facts(db) == facts_inline


def test_prepared_foyers_survive_the_trip_between_processes(db, tmp_path):
    """What the reading process sends is plain data: marshal round-trips it exactly (a date or a record
    object slipping in would make the child process fail)."""
    generate(tmp_path, foyers=60, days=10, start=date(2024, 3, 1), seed=9)
    deriver = Deriver(db.hmac_key)
    prepared = [deriver.prepare(f) for path in sorted(tmp_path.glob("*.xml")) for f in FluxReader(path)]
    assert len(prepared) > 60
    assert marshal.loads(marshal.dumps(prepared)) == prepared  # noqa: S302 - our own bytes


def test_small_hand_made_file_reads_the_same_in_both_modes(db, tmp_path):
    foyers = [foyer(person(NIR_A)), foyer(person(NIR_B, prenom="MARIE"), matricule="0002")]
    path = write_flux(tmp_path, foyers)
    engine = get_engine(db)
    inline = ingest_file(engine, db, path, IngestOptions(date(2024, 3, 1), parallel=False))
    facts_inline = _facts(db)
    truncate(db)
    parallel = ingest_file(engine, db, path, IngestOptions(date(2024, 3, 1), parallel=True))
    assert parallel.status == inline.status == "applied"
    assert (parallel.persons_brsa, parallel.state_changes) == (inline.persons_brsa, inline.state_changes)
    assert _facts(db) == facts_inline


def test_parallel_reading_rejects_like_inline(db, tmp_path):
    xml = text_of(write_flux(tmp_path, [foyer(), foyer(matricule="0002")]))
    bad = tmp_path / "bad.xml"
    bad.write_text(
        xml.replace("<NBTOTDOSRSATRANSM>00000002<", "<NBTOTDOSRSATRANSM>00000009<").replace("windows-1252", "UTF-8"),
        encoding="utf-8",
    )
    before = snapshot(db)
    report = ingest_file(get_engine(db), db, bad, IngestOptions(date(2024, 3, 1), parallel=True))
    assert (report.status, report.error_code) == ("rejected", "count_mismatch")
    assert snapshot(db) == before


def test_a_record_completed_with_what_was_known_gets_the_completed_state_s_fingerprint(db, tmp_path):
    """A record without its address block keeps the address in force: the state row written is the completed
    one, and its fingerprint is that state's."""
    engine = get_engine(db)
    first = write_flux(tmp_path, [foyer(person(NIR_A))], day=date(2024, 3, 1), type_flux="M")
    assert ingest_file(engine, db, first, IngestOptions(date(2024, 3, 1), initial_stock=True)).status == "applied"
    xml = text_of(write_flux(tmp_path, [foyer(person(NIR_A, sdd=False))], day=date(2024, 3, 4)))
    second = tmp_path / "no_address.xml"
    second.write_text(
        re.sub(r"<DonneesAdministratives>.*?</DonneesAdministratives>", "", xml, flags=re.DOTALL),
        encoding="windows-1252",
    )
    report = ingest_file(engine, db, second, IngestOptions(date(2024, 3, 4), parallel=True))
    assert report.status == "applied" and "block_missing" in {w["code"] for w in report.warnings}
    with engine.connect() as conn:
        rows = conn.execute(select(PersonState).order_by(PersonState.received_on)).all()
    assert [r.sdd for r in rows] == [True, False]
    assert rows[1].adresse == rows[0].adresse is not None
    values = tuple(rows[1]._mapping[c] for c in STATE_COLUMNS)
    iso = tuple(v.isoformat() if isinstance(v, date) else v for v in values)
    assert rows[1].fingerprint == fingerprint(iso)


def test_a_duplicate_big_file_stops_the_reading_process_started_for_it(db, tmp_path):
    """The reading process starts before the duplicate check (issue #27): a duplicate stops it, reads
    nothing more and changes nothing."""
    path = write_flux(tmp_path, [foyer(person(NIR_A)), foyer(person(NIR_B), matricule="0002")])
    engine = get_engine(db)
    assert ingest_file(engine, db, path, IngestOptions(date(2024, 3, 1), parallel=True)).status == "applied"
    before = snapshot(db)
    again = ingest_file(engine, db, path, IngestOptions(date(2024, 3, 2), parallel=True))
    assert again.status == "duplicate" and again.duplicate_of is not None
    assert multiprocessing.active_children() == []
    assert snapshot(db) == before


def test_an_instruction_flux_is_not_read_as_a_beneficiary_one_when_parallel(db, tmp_path):
    path = write_instruction(tmp_path, [foyer(person(NIR_A))])
    report = ingest_file(get_engine(db), db, path, IngestOptions(date(2024, 3, 1), parallel=True))
    assert (report.status, report.nature) == ("applied", "I")
    assert multiprocessing.active_children() == []
