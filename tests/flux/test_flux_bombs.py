"""Compressed bombs and other files that would exhaust memory (issue #23, item 2): the decompressed size and
the number of elements of a flux file are capped (PASSERELLE_FLUX_MAX_DECOMPRESSED_BYTES,
PASSERELLE_FLUX_MAX_ELEMENTS), what the parser holds between two records is bounded, and a document nested
too deep is refused. Each refusal is a whole-file rejection: nothing applied, the file quarantined."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import pytest
from lxml import etree

from app.db import session_scope
from app.flux.envelope import FluxLimits
from app.flux.instruction import InstructionReader
from app.flux.reader import FluxReader, FluxRejected
from app.models import FluxFile
from app.settings import Settings
from tests.support.factories import ingest, snapshot
from tests.support.fluxbuilder import NIR_B, NIR_C, foyer, person, text_of, write_flux, write_instruction

D2 = date(2024, 3, 2)
ROOT_DIR = Path(__file__).resolve().parents[2]
HEADER = (
    '<?xml version="1.0" encoding="UTF-8"?><Racine><IdentificationFlux><APPLIEME>CRI</APPLIEME>'
    "<TYPEFLUX>I</TYPEFLUX><NATFLUX>D</NATFLUX><DTCREAFLUX>2024-03-01</DTCREAFLUX></IdentificationFlux>"
)
TRAILER = "<TransmissionFlux><NBTOTDOSRSATRANSM>0</NBTOTDOSRSATRANSM></TransmissionFlux></Racine>"


def _gzip_with(path: Path, xml: str, filler: bytes, times: int, after: str) -> Path:
    """`xml` (UTF-8) with `filler` repeated `times` times after its first `after`, written as a gzip as it
    goes (a few KB on disk)."""
    xml = xml.replace("windows-1252", "UTF-8")
    cut = xml.index(after) + len(after)
    with gzip.open(path, "wb", compresslevel=9) as out:
        out.write(xml[:cut].encode())
        for _ in range(times):
            out.write(filler)
        out.write(xml[cut:].encode())
    return path


def _two_foyers(tmp_path: Path) -> str:
    return text_of(write_flux(tmp_path, [foyer(), foyer(person(NIR_B), matricule="0002")], name="good.xml"))


@pytest.mark.parametrize(
    ("limit", "filler", "times", "parallel", "setting"),
    [
        # 60,000 unknown elements between two foyers: ~600 KB of XML in ~1 KB of gzip
        ({"flux_max_elements": 20_000}, b"<Inconnu/>", 60_000, False, "PASSERELLE_FLUX_MAX_ELEMENTS"),
        ({"flux_max_elements": 20_000}, b"<Inconnu/>", 60_000, True, "PASSERELLE_FLUX_MAX_ELEMENTS"),
        # 2 MiB of blanks: no element at all, only bytes
        ({"flux_max_decompressed_bytes": 256 * 1024}, b" " * 1024, 2048, False, "DECOMPRESSED_BYTES"),
    ],
)
def test_a_gzip_bomb_is_rejected_whole_and_quarantined(db, tmp_path, limit, filler, times, parallel, setting):
    ingest(db, write_flux(tmp_path, [foyer(person(NIR_C), matricule="0000777")], name="before.xml"))
    before = snapshot(db)
    bomb = _gzip_with(tmp_path / "CAF_bomb.xml.gz", _two_foyers(tmp_path), filler, times, "</InfosFoyerRSA>")
    assert bomb.stat().st_size < 20_000
    settings = db.model_copy(update=limit)
    report = ingest(settings, bomb, received_on=D2, parallel=parallel)
    assert report.status == "rejected"
    assert report.error_code == "too_large"
    assert setting in (report.error or "") and report.error_position
    assert snapshot(db) == before, "nothing of a rejected file is applied"
    quarantined = Path(report.quarantine_path or "")
    assert quarantined.read_bytes() == bomb.read_bytes()
    assert json.loads(quarantined.with_name(quarantined.name + ".report.json").read_text())["error_code"] == "too_large"
    with session_scope(db) as s:
        row = s.get(FluxFile, report.file_id)
        assert row is not None and row.status == "rejected" and row.error_code == "too_large"


def test_a_file_at_its_limits_is_read_and_one_beyond_is_refused(tmp_path):
    """Elements and bytes are counted exactly: a file of N elements and B bytes passes limits of N and B."""
    path = write_flux(tmp_path, [foyer(), foyer(person(NIR_B), matricule="0002")], compress=True)
    xml = gzip.decompress(path.read_bytes())
    elements = sum(1 for _ in etree.iterparse(io.BytesIO(xml), events=("start",)))
    assert len(list(FluxReader(path, FluxLimits(max_bytes=len(xml), max_elements=elements)))) == 2
    for limits in (FluxLimits(max_elements=elements - 1), FluxLimits(max_bytes=len(xml) - 1)):
        with pytest.raises(FluxRejected) as info:
            list(FluxReader(path, limits))
        assert info.value.code == "too_large"


def test_the_limits_are_settings():
    settings = Settings(flux_max_decompressed_bytes=1 << 20, flux_max_elements=1000)
    assert FluxLimits.of(settings) == FluxLimits(max_bytes=1 << 20, max_elements=1000)
    defaults = FluxLimits.of(Settings())
    # a national monthly file: ~4 million persons at ~1.25 KB and ~45 elements each
    assert defaults.max_bytes >= 4_000_000 * 1250 and defaults.max_elements >= 4_000_000 * 45


READ_AND_MEASURE = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path
    from app.flux.reader import FluxReader, FluxRejected
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        code = "applied: %d foyers" % len(list(FluxReader(Path(sys.argv[1]))))
    except FluxRejected as exc:
        code = exc.code
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"code": code, "grown_kib": after - before}))
    """
)


@pytest.mark.parametrize(
    ("filler", "times"),
    [
        (b"<Inconnu/>" * 1000, 1500),  # 1.5 million unknown elements and no foyer (the reported bomb)
        (b"<X/>" + b"a" * (1 << 20), 120),  # 120 MiB of text between elements and no foyer
    ],
)
def test_a_file_of_unknown_elements_is_refused_with_flat_memory(tmp_path, filler, times):
    """The parser builds every element, even those no event reports; only a record's end frees what came
    before it. A file without records used to be read whole into memory (~130 bytes an element) and
    accepted as an empty file. The peak is measured in a process of its own: libxml2 allocates outside
    Python's allocator, where tracemalloc does not see."""
    bomb = _gzip_with(tmp_path / "bomb.xml.gz", HEADER + TRAILER, filler, times, "</IdentificationFlux>")
    assert bomb.stat().st_size < 300_000
    done = subprocess.run(
        [sys.executable, "-c", READ_AND_MEASURE, str(bomb)],
        cwd=ROOT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    measured = json.loads(done.stdout)
    assert measured["grown_kib"] < 40 * 1024, f"the reader's memory grew by {measured['grown_kib'] // 1024} MiB"
    assert measured["code"] == "too_large"


def test_records_with_unknown_elements_between_them_are_read(tmp_path):
    """Unknown elements are not refused as such: between records they are freed with each record."""
    xml = text_of(write_flux(tmp_path, [foyer(matricule=f"{i:07}") for i in range(1, 31)], name="many.xml"))
    xml = xml.replace("</InfosFoyerRSA>", "</InfosFoyerRSA>" + "<Inconnu/>" * 5000)
    path = tmp_path / "with_unknown.xml"
    path.write_text(xml.replace("windows-1252", "UTF-8"), encoding="utf-8")
    assert len(list(FluxReader(path))) == 30  # 150,000 unknown elements, 5,000 between two records


def test_a_document_nested_too_deep_is_refused(tmp_path):
    xml = _two_foyers(tmp_path).replace("windows-1252", "UTF-8")
    deep = xml.replace("</InfosFoyerRSA>", "<A>" * 300 + "</A>" * 300 + "</InfosFoyerRSA>", 1)
    path = tmp_path / "deep.xml"
    path.write_text(deep, encoding="utf-8")
    with pytest.raises(FluxRejected) as info:
        list(FluxReader(path))
    assert info.value.code == "too_deep" and "256" in info.value.reason
    # 200 levels are read (a flux file has fewer than 10; libxml2's own limit is 256)
    path.write_text(xml.replace("</InfosFoyerRSA>", "<A>" * 200 + "</A>" * 200 + "</InfosFoyerRSA>", 1))
    assert len(list(FluxReader(path))) == 2


def test_an_instruction_flux_has_the_same_limits(tmp_path):
    good = write_instruction(tmp_path, [foyer(), foyer(person(NIR_B), matricule="0002")])
    xml = good.read_bytes().decode("windows-1252").replace("windows-1252", "UTF-8")
    key = b"k" * 32
    elements = sum(1 for _ in etree.iterparse(good, events=("start",)))
    assert len(list(InstructionReader(good, key, FluxLimits(max_elements=elements)))) == 2
    for limits in (FluxLimits(max_elements=elements - 1), FluxLimits(max_bytes=len(xml) - 1)):
        with pytest.raises(FluxRejected) as info:
            list(InstructionReader(good, key, limits))
        assert info.value.code == "too_large"
    bomb = _gzip_with(tmp_path / "bomb.xml.gz", xml, b"<Inconnu/>" * 1000, 200, "</IdentificationFlux>")
    with pytest.raises(FluxRejected) as info:
        list(InstructionReader(bomb, key))
    assert info.value.code == "too_large" and "without a complete record" in info.value.reason
    deep = tmp_path / "deep.xml"
    deep.write_text(xml.replace("</IdentificationFlux>", "</IdentificationFlux>" + "<A>" * 300 + "</A>" * 300))
    with pytest.raises(FluxRejected) as info:
        list(InstructionReader(deep, key))
    assert info.value.code == "too_deep"


def test_a_truncated_gzip_instruction_flux_is_rejected(tmp_path):
    """Like a beneficiary flux: `truncated`, never a raw EOFError (found while bounding the readers)."""
    good = write_instruction(tmp_path, [foyer(matricule=f"{i:07}") for i in range(1, 60)])
    data = gzip.compress(good.read_bytes())
    cut = tmp_path / "cut.xml.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(FluxRejected) as info:
        list(InstructionReader(cut, b"k" * 32))
    assert info.value.code == "truncated"
