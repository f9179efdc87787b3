"""France Travail's return file is read as a stream and stored in batches (issue #23, item 9: a 50 MB file
took ~2.5 GB, held whole in memory and in one write): memory does not grow with the file, a bad line
anywhere still rejects it whole before anything is written, and the report counts every problem while
listing the first thousand."""

from __future__ import annotations

import csv
import io
import tracemalloc
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.db import session_scope
from app.errors import Unprocessable
from app.france_travail.return_file import REPORT_MAX_LINES, ReturnFileRejected, ingest
from app.models import FtReturnFile, FtReturnRow
from tests.support.factories import ingest as ingest_flux
from tests.support.fluxbuilder import foyer, write_flux

HEADER = [
    "Nom", "Prénom", "Date De Naissance", "Tranche Age Actuel", "Obligation Emploi Actuel", "Inscription Actuelle",
    "Rome Actuel", "Diagnostic Realise (oui/non)", "Commune Entree", "Commune Actuelle", "Libelle Commune Actuelle",
    "Territoire Entree", "Territoire Actuel", "Departement Actuel", "Agence Dans Xp", "Agence",
    "Direction territoriale Actuelle", "Date Entree Parcours", "Date Sortie", "Motif Sortie",
    "Libelle Parcours Entree", "Libelle Parcours Actuel", "Modalité de suivi et d’accompagnement (Msa) Actuelle",
    "Libelle Pni (si suivi délégué à un partenaire non informatisé)", "Libelle Type de Suivi délégué",
    "Top Demandeur d’emploi de Longue Duree",
]  # fmt: skip
FILLER = ["30-39 ans", "Non", "Oui", "K1304", "oui", "55545", "55545", "VERDUN", "T1", "T1", "55", "Non",
          "Agence de Verdun", "DT Meuse", "03/03/2026", "", "", "Accompagnement renforcé", "Accompagnement renforcé",
          "Guidé", "", "", "Non"]  # fmt: skip


def _return_file(path: Path, unknown: int, encoding: str = "utf-8-sig", last: list[str] | None = None) -> Path:
    """DUPONT JEAN (the flux's person) then `unknown` persons nobody knows; `last` ends the file."""
    with path.open("w", encoding=encoding, newline="") as out:
        writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
        writer.writerow(HEADER)
        writer.writerow(["DUPONT", "JEAN", "15/01/1990", *FILLER])
        for i in range(unknown):
            writer.writerow([f"INCONNU{i:06}", "PERSONNE", f"{1 + i % 28:02}/{1 + i % 12:02}/1975", *FILLER])
        if last:
            writer.writerow(last)
    return path


@pytest.fixture
def known(db, tmp_path):
    ingest_flux(db, write_flux(tmp_path, [foyer()]))
    return db


def test_a_big_return_file_is_stored_in_batches_with_flat_memory(known, tmp_path):
    rows = 30_000
    path = _return_file(tmp_path / "retour.csv", rows)
    size = path.stat().st_size
    tracemalloc.start()
    try:
        with path.open("rb") as stream, session_scope(known, write=True) as session:
            report = ingest(session, known, "055", path.name, stream, "test")
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Held whole, the file (~6 MB) was its bytes, its text and 30,000 rows of 26 values at once: ~140 MiB
    # (measured before the change); in batches of 1,000 rows, ~10 MiB whatever its length
    assert peak < 20 * 1024 * 1024, f"peak {peak // 1024} KiB for a file of {size // 1024} KiB"
    assert (report.rows, report.matched, report.unmatched_count) == (rows + 1, 1, rows)
    assert len(report.unmatched) == REPORT_MAX_LINES and report.unmatched[0]["line"] == 3
    with session_scope(known) as s:
        assert s.scalar(select(func.count()).select_from(FtReturnRow)) == rows + 1
        stored = s.scalar(select(FtReturnFile))
        assert stored is not None and (stored.rows, stored.matched, stored.unmatched) == (rows + 1, 1, rows)
    with path.open("rb") as stream, session_scope(known, write=True) as session:
        assert ingest(session, known, "055", path.name, stream, "test").duplicate


def test_a_bad_last_line_rejects_the_whole_file_before_anything_is_written(known, tmp_path):
    bad = ["DURAND", "LUC", "31/02/1980", *FILLER]
    path = _return_file(tmp_path / "retour.csv", 5000, last=bad)
    with (
        pytest.raises(ReturnFileRejected) as info,
        path.open("rb") as stream,
        session_scope(known, write=True) as session,
    ):
        ingest(session, known, "055", path.name, stream, "test")
    assert "line 5003" in info.value.message
    with session_scope(known) as s:
        assert s.scalar(select(func.count()).select_from(FtReturnFile)) == 0
        assert s.scalar(select(func.count()).select_from(FtReturnRow)) == 0


def test_the_encoding_is_told_from_the_whole_stream(known, tmp_path):
    """Windows-1252 noticed after the first megabyte; a byte neither encoding has is named where it is."""
    path = _return_file(tmp_path / "retour.csv", 6000, encoding="cp1252", last=["BÉATRICE", "ÉLODIE", "01/01/1980"])
    with path.open("rb") as stream, session_scope(known, write=True) as session:
        report = ingest(session, known, "055", path.name, stream, "test")
    assert report.encoding == "windows-1252" and report.rows == 6002 and path.stat().st_size > 1 << 20
    data = bytearray(path.read_bytes())
    at = len(data) - 10
    data[at] = 0x81  # undefined in Windows-1252
    with pytest.raises(Unprocessable) as info, session_scope(known, write=True) as session:
        ingest(session, known, "055", "x.csv", io.BytesIO(bytes(data)), "test")
    assert f"byte {at})" in info.value.message
