"""Mutations of a valid flux file: every outcome is a clean application or a clean rejection, and a rejected
file leaves the stored data exactly as it was."""

from __future__ import annotations

import re
from datetime import date

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.factories import ingest, snapshot
from tests.support.fluxbuilder import (
    IDENTIFICATION_END,
    NIR_A,
    NIR_B,
    NIR_C,
    STATE_END,
    abroad,
    foyer,
    person,
    refusal_block,
    transfer_blocks,
    write_flux,
)
from tests.support.mutations import apply, mutation


def _with_new_elements(data: bytes) -> bytes:
    """The elements of real files read since issue #9: booleans written true/false, a state 6 right closed
    in FinDroitMoisAnterieur, transfers both ways with MATRICULEORGCEDMUT, a refusal, an address abroad,
    a foyer without its blocks."""
    data = data.replace(b"<TOPPERSDRODEVORSA>1<", b"<TOPPERSDRODEVORSA>true<", 1)
    data = data.replace(b"<TOPPERSDRODEVORSA>0<", b"<TOPPERSDRODEVORSA>false<", 1)
    data = data.replace(b"<FinDroit>", b"<FinDroitMoisAnterieur>").replace(b"</FinDroit>", b"</FinDroitMoisAnterieur>")
    blocks = transfer_blocks(cedant=("MSA", "552", "0005555", "2024-03-01"), prenant=("CAF", "541", "2024-01-10"))
    data = data.replace(IDENTIFICATION_END.encode(), blocks.encode(), 1)
    data = data.replace(STATE_END.encode(), refusal_block().encode(), 1)
    first_end = data.index(b"</InfosFoyerRSA>")
    data = abroad(data[:first_end], lines=("12 AVENUE LOUISE", "1050 IXELLES")) + data[first_end:]
    last = data.rindex(b"<InfosFoyerRSA>")
    head, tail = data[:last], data[last:]
    tail = re.sub(rb"<DonneesAdministratives>.*?</DonneesAdministratives>", b"", tail, count=1, flags=re.DOTALL)
    tail = re.sub(rb"<PrestationRSA>.*?</PrestationRSA>", b"", tail, count=1, flags=re.DOTALL)
    return head + tail


def test_the_file_with_new_elements_is_valid_as_written(db, tmp_path):
    data = _with_new_elements(
        write_flux(
            tmp_path,
            [
                foyer(person(NIR_A), person(NIR_B, role="CJT", prenom="MARIE", sdd=False)),
                foyer(person(None, nom="PETIT"), matricule="9"),
            ],
            day=date(2024, 3, 4),
        ).read_bytes()
    )
    for element in (b"true", b"false", b"MATRICULEORGCEDMUT", b"DDDEPAMUT", b"<Refus>", b"AdresseHorsFrance"):
        assert element in data
    path = tmp_path / "new.xml"
    path.write_bytes(data)
    report = ingest(db, path, received_on=date(2024, 3, 4))
    assert report.status == "applied", report.error
    codes = {w["code"] for w in report.warnings}
    assert codes <= {"no_initial_stock", "block_missing"}, str(report.warnings)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(mutation, min_size=1, max_size=3))
def test_mutated_files_are_applied_or_cleanly_rejected(db, tmp_path_factory, mutations):
    tmp = tmp_path_factory.mktemp("fuzz")
    from tests.support.database import truncate

    truncate(db)
    ingest(db, write_flux(tmp, [foyer(person(NIR_C), matricule="0000777")], name="base.xml"))
    before = snapshot(db)
    valid = _with_new_elements(
        write_flux(
            tmp,
            [
                foyer(person(NIR_A), person(NIR_B, role="CJT", prenom="MARIE")),
                foyer(person(None), matricule="0000888", etat="6", closure=("MUT", date(2024, 2, 29))),
                foyer(person(None, nom="PETIT"), matricule="0000999"),
            ],
            day=date(2024, 3, 4),
        ).read_bytes()
    )
    data = valid
    for m in mutations:
        data = apply(data, m)
    path = tmp / "mutated.xml"
    path.write_bytes(data)
    report = ingest(db, path, received_on=date(2024, 3, 4))
    assert report.status in ("applied", "rejected", "duplicate")
    if report.status == "rejected":
        assert report.error and report.error_code
        assert snapshot(db) == before
