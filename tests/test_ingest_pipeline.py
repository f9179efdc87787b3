"""The child-process reader gives the same result as the inline one, and its rejections are the same."""

from __future__ import annotations

from datetime import date

from app.db import get_engine
from app.ingest.loader import IngestOptions, ingest_file
from tests.fluxbuilder import NIR_A, NIR_B, foyer, person, text_of, write_flux
from tests.test_ingest_loader import snapshot


def test_parallel_reading_applies_the_same_facts(db, tmp_path):
    foyers = [foyer(person(NIR_A)), foyer(person(NIR_B, prenom="MARIE"), matricule="0002")]
    path = write_flux(tmp_path, foyers)
    engine = get_engine(db)
    inline = ingest_file(engine, db, path, IngestOptions(date(2024, 3, 1), parallel=False))
    facts_inline = snapshot(db)
    from tests.conftest import _truncate

    _truncate(db)
    parallel = ingest_file(engine, db, path, IngestOptions(date(2024, 3, 1), parallel=True))
    assert parallel.status == inline.status == "applied"
    assert (parallel.persons_brsa, parallel.state_changes) == (inline.persons_brsa, inline.state_changes)
    assert snapshot(db).keys() == facts_inline.keys()


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
