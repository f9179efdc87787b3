"""Names and birth date alone never join two records the files show in two different foyers on the same date
(SPEC §3, third round; issue #22, item 1); every identity-only match is said, kept for review, and can be
split. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from sqlalchemy import func, select

from app.db import get_engine, session_scope
from app.flux.loader import IngestOptions, ingest_file
from app.models import AccessRecord, AmbiguousKey, EntryEpisode, IdentityMatch, Person, PersonState
from app.orientation.episodes import refresh_pending
from app.security.nir import NirProtector
from tests.support.cli import run_cli
from tests.support.database import truncate
from tests.support.factories import ingest
from tests.support.fluxbuilder import NIR_A, NIR_B, foyer, person, write_flux
from tests.support.orderproof import snapshot

STOCK = date(2024, 1, 2)
FEB = date(2024, 2, 12)
FEB_LATER = date(2024, 2, 20)
MAR = date(2024, 3, 4)
END = date(2024, 4, 30)


def _file(tmp_path: Path, name: str, foyers, day: date, type_flux: str = "I", fonorg: str = "CAF") -> Path:
    directory = tmp_path / name
    directory.mkdir()
    return write_flux(directory, foyers, day=day, type_flux=type_flux, fonorg=fonorg)


def _caf_stock(tmp_path: Path, *persons) -> Path:
    return _file(tmp_path, "caf-stock", [foyer(*persons, matricule="0001")], STOCK, "M")


def _msa(tmp_path: Path, name: str, day: date, *persons) -> Path:
    msa = foyer(*persons, fonorg="MSA", numorg="555", matricule="7000001")
    return _file(tmp_path, name, [msa], day, fonorg="MSA")


def _persons(db) -> list[Person]:
    with session_scope(db) as s:
        return list(s.scalars(select(Person).order_by(Person.id)))


def _episodes(db) -> dict[int, list[date]]:
    with session_scope(db) as s:
        out: dict[int, list[date]] = {}
        for ep in s.scalars(select(EntryEpisode).order_by(EntryEpisode.person_id, EntryEpisode.rank)):
            out.setdefault(ep.person_id, []).append(ep.t0)
        return out


def _foyers(db, person_id: int) -> list[tuple[date, str | None, str | None, bool]]:
    with session_scope(db) as s:
        rows = s.scalars(
            select(PersonState)
            .where(PersonState.person_id == person_id)
            .order_by(PersonState.received_on, PersonState.file_created_at, PersonState.seq)
        )
        return [(r.received_on, r.fonorg, r.matricule, r.present) for r in rows]


def _nir_hash(db, nir: str) -> str:
    return NirProtector(db.encryption_keys, db.hmac_key).lookup_hash(nir)


def _count(db, model) -> int:
    with session_scope(db) as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


# -- the issue's case: homonyms of two organismes -----------------------------------------------------------


def test_homonyms_of_caf_and_msa_are_two_persons_each_with_their_episodes(db, tmp_path):
    """The issue's case: a CAF stock person with a NIR, and an MSA person without NIR who shares their names
    and birth date, in an MSA foyer, while the CAF foyer is still in force (and a CAF daily file shows it
    again the same day). Two persons; the MSA one a nouvel entrant in February; the report says why."""
    assert ingest(db, _caf_stock(tmp_path, person(NIR_A)), STOCK, initial_stock=True).status == "applied"
    caf_again = _file(tmp_path, "caf-feb", [foyer(person(NIR_A, sdd=False), matricule="0001")], FEB)
    assert ingest(db, caf_again, FEB).status == "applied"
    report = ingest(db, _msa(tmp_path, "msa-feb", FEB, person(None)), FEB)
    assert report.status == "applied", report
    assert (report.new_persons, report.matched_by) == (1, {})
    assert (report.identity_matches_refused, report.identity_only_matches) == (1, 0)
    (warning,) = [w for w in report.warnings if w["code"] == "identity_match_refused"]
    assert warning["message"].startswith("foyer 1, person 1: ") and "another foyer" in warning["message"]
    assert "DUPONT" not in json.dumps(report.to_dict()) and "1990" not in json.dumps(report.to_dict())

    caf, msa = _persons(db)
    assert caf.nir_hash == _nir_hash(db, NIR_A) and msa.nir_hash is None
    assert {f[1] for f in _foyers(db, caf.id)} == {"CAF"} and {f[1] for f in _foyers(db, msa.id)} == {"MSA"}
    assert _episodes(db) == {msa.id: [FEB]}  # the stock person opens nothing; the MSA person enters in February
    assert _count(db, IdentityMatch) == 0

    # the next MSA file finds its person by the MSA foyer's key; names + birth date identify neither any more
    report = ingest(db, _msa(tmp_path, "msa-mar", MAR, person(None, sdd=False)), MAR)
    assert (report.new_persons, report.matched_by, report.identity_matches_refused) == (0, {"matricule": 1}, 0)
    with session_scope(db) as s:
        assert s.scalar(select(AmbiguousKey.kind)) == "identity"


def test_the_stock_case_refused_without_a_caf_file_the_same_day(db, tmp_path):
    """No CAF file on the MSA file's date: the CAF state in force at that date (the stock) is present in its
    CAF foyer, so the two foyers coexist that day."""
    ingest(db, _caf_stock(tmp_path, person(NIR_A)), STOCK, initial_stock=True)
    report = ingest(db, _msa(tmp_path, "msa-feb", FEB, person(None)), FEB)
    assert (report.new_persons, report.identity_matches_refused) == (1, 1)
    assert len(_persons(db)) == 2


def test_the_homonyms_case_is_the_same_whatever_order_the_files_arrive_in(db, tmp_path):
    """The MSA file applied before a late CAF daily file dated before it: the CAF person's first state after
    the CAF file is nowhere, the MSA person's first state after it is in an MSA foyer: refused too."""
    stock = _file(tmp_path, "stock", [foyer(person(NIR_B, nom="MARTIN", prenom="ANNE"), matricule="0009")], STOCK, "M")
    caf = _file(tmp_path, "caf", [foyer(person(NIR_A), matricule="0001")], FEB)
    msa = _msa(tmp_path, "msa", FEB_LATER, person(None))
    runs = []
    for files in ([(stock, STOCK), (caf, FEB), (msa, FEB_LATER)], [(stock, STOCK), (msa, FEB_LATER), (caf, FEB)]):
        truncate(db)
        refused = 0
        for path, day in files:
            report = ingest_file(
                get_engine(db), db, path, IngestOptions(day, initial_stock=day == STOCK), refresh=False
            )
            assert report.status == "applied"
            refused += report.identity_matches_refused
        refresh_pending(get_engine(db))
        assert refused == 1 and len(_persons(db)) == 3
        runs.append(snapshot(db, "055", STOCK, END, END))
    assert runs[1].differences(runs[0]) == []


def test_a_match_contradicted_by_the_nir_is_never_made(db, tmp_path):
    """(a) Both records have a NIR and they differ: names + birth date never join them (the matcher's own
    check for every key but the NIR), whatever the foyers."""
    ingest(db, _file(tmp_path, "a", [foyer(person(NIR_A), matricule="0001")], STOCK), STOCK)
    report = ingest(db, _file(tmp_path, "b", [foyer(person(NIR_B), matricule="0002")], FEB), FEB)
    assert (report.new_persons, report.matched_by, report.identity_only_matches) == (1, {}, 0)
    assert len(_persons(db)) == 2


def test_two_foyers_of_one_file_are_two_persons(db, tmp_path):
    """Within one file, a record already placed the person in another foyer: not joined."""
    path = _file(tmp_path, "both", [foyer(person(None), matricule="0001"), foyer(person(None), matricule="0002")], FEB)
    report = ingest(db, path, FEB)
    assert (report.new_persons, report.identity_matches_refused, report.identity_only_matches) == (2, 1, 0)


def test_a_record_the_same_day_in_another_foyer_is_not_joined(db, tmp_path):
    """(b) A file received the same day shows the person in another foyer (same organisme): not joined."""
    ingest(db, _file(tmp_path, "a", [foyer(person(None), matricule="0001")], FEB), FEB)
    report = ingest(db, _file(tmp_path, "b", [foyer(person(None), matricule="0002")], FEB), FEB)
    assert (report.new_persons, report.identity_matches_refused) == (1, 1)


# -- an accepted identity-only match: said, listed, split ----------------------------------------------------


def test_a_person_without_nir_changing_foyer_in_one_organisme_is_still_joined(db, tmp_path):
    """The legitimate case: a person without NIR leaves their CAF foyer for a new one of the same CAF. One
    person, one history; the match is said in the report and kept for review."""
    ingest(db, _file(tmp_path, "a", [foyer(person(None), matricule="0001")], STOCK), STOCK)
    report = ingest(db, _file(tmp_path, "b", [foyer(person(None, sdd=False), matricule="0002")], FEB), FEB)
    assert (report.new_persons, report.matched_by, report.identity_only_matches) == (0, {"identity": 1}, 1)
    (warning,) = [w for w in report.warnings if w["code"] == "identity_only_match"]
    assert warning["message"].startswith("foyer 1, person 1: joined to a known person by names and birth date")
    (p,) = _persons(db)
    assert [(f[2], f[3]) for f in _foyers(db, p.id)] == [("0001", True), ("0002", True)]
    with session_scope(db) as s:
        (m,) = s.scalars(select(IdentityMatch)).all()
        assert (m.person_id, m.file_id, m.foyer_position, m.person_position) == (p.id, report.file_id, 1, 1)
        assert (m.fonorg, m.numorg, m.matricule, m.role, m.status, m.received_on) == (
            "CAF",
            "551",
            "0002",
            "DEM",
            "open",
            FEB,
        )
        assert m.brought_nir is False and len(m.record_keys) == 2  # the matricule and demand-number keys


def test_an_identity_match_is_listed_then_split_and_never_joined_again(db, tmp_path, monkeypatch):
    """A wrong match the rules cannot see (same organisme, another day): the CAF stock person without NIR and
    a homonym with a NIR who enters in February in another CAF foyer. Listed by the CLI, counted by `flux
    show`, split: two persons, each their facts and episodes, the NIR with the foyer that brought it, an
    audit event; later files (one dated before the split's later facts) never join them again."""
    ingest(db, _caf_stock(tmp_path, person(None)), STOCK, initial_stock=True)
    feb = _file(tmp_path, "feb", [foyer(person(NIR_B), matricule="0002")], FEB)
    report = ingest(db, feb, FEB)
    assert (report.identity_only_matches, report.new_persons) == (1, 0)
    (merged,) = _persons(db)
    assert _episodes(db) == {}  # joined to a stock person: the February entry is lost

    r = run_cli(db, monkeypatch, "persons", "identity-matches", "--departement", "055", "--json")
    assert r.exit_code == 0, r.output
    (listed,) = json.loads(r.stdout)
    assert (listed["person_id"], listed["file_id"], listed["foyer_key"], listed["status"]) == (
        merged.id,
        report.file_id,
        "CAF 551 0002",
        "open",
    )
    assert "DUPONT" not in r.stdout and "1990" not in r.stdout
    r = run_cli(db, monkeypatch, "flux", "show", report.file_id)
    shown = json.loads(r.stdout)
    assert shown["identity_only_matches"] == 1 and shown["identity_matches"] == {"open": 1, "split": 0}

    r = run_cli(db, monkeypatch, "persons", "split", listed["id"], "--reason", "   ")
    assert r.exit_code == 1 and "reason" in r.output
    r = run_cli(db, monkeypatch, "persons", "split", listed["id"], "--reason", "homonymes, NIR différents", "--json")
    assert r.exit_code == 0, r.output
    outcome = json.loads(r.stdout)
    assert (outcome["person_id"], outcome["records_moved"], outcome["keys_moved"], outcome["nir_moved"]) == (
        merged.id,
        1,
        2,
        True,
    )
    stock_person, entrant = _persons(db)
    assert entrant.id == outcome["new_person_id"]
    assert stock_person.nir_hash is None and entrant.nir_hash == _nir_hash(db, NIR_B)
    assert [(f[2], f[3]) for f in _foyers(db, stock_person.id)] == [("0001", True)]
    assert [(f[0], f[2], f[3]) for f in _foyers(db, entrant.id)] == [(FEB, "0002", True)]
    assert _episodes(db) == {entrant.id: [FEB]}
    with session_scope(db) as s:
        (event,) = s.scalars(select(AccessRecord).where(AccessRecord.action == "persons.split")).all()
        assert event.person_id == merged.id and event.principal_id == "job:persons split"
        assert json.loads(event.detail or "{}")["new_person"] == entrant.id
        m = s.scalar(select(IdentityMatch))
        assert m is not None and (m.status, m.split_person_id, m.split_reason) == (
            "split",
            entrant.id,
            "homonymes, NIR différents",
        )
    r = run_cli(db, monkeypatch, "persons", "split", listed["id"], "--reason", "again")
    assert r.exit_code == 1 and "already split" in r.output
    assert run_cli(db, monkeypatch, "persons", "split", 999, "--reason", "x").exit_code == 2

    # a later file: the stock foyer and the February foyer, both without NIR: each finds its own person
    later = _file(
        tmp_path,
        "mar",
        [foyer(person(None, sdd=False), matricule="0001"), foyer(person(None, sdd=False), matricule="0002")],
        MAR,
    )
    report = ingest(db, later, MAR)
    assert (report.new_persons, report.matched_by, report.identity_only_matches) == (0, {"matricule": 2}, 0)
    # a late file dated between them, of a third foyer without NIR: names + birth date join nobody
    late = _file(tmp_path, "late", [foyer(person(None), matricule="0003")], FEB_LATER)
    report = ingest(db, late, FEB_LATER)
    assert (report.new_persons, report.identity_only_matches) == (1, 0)
    assert [len(_foyers(db, p.id)) for p in _persons(db)] == [2, 2, 1]
    assert _foyers(db, entrant.id)[-1][1:] == ("CAF", "0002", True)
