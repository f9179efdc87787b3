"""Flux fidelity (issue #9): files as the CNAF really writes them, hand-written from the facts in
shared/formats/caf-flux.md ("What real files show"), on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import stat
from datetime import date

from sqlalchemy import func, select

from app.db import get_engine, session_scope
from app.flux.loader import IngestOptions, ingest_file
from app.models import EntryEpisode, FluxFile, PersonState
from app.orientation.episodes import refresh_pending
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

D1 = date(2024, 3, 1)


def _rewrite(path, old: str, new: str) -> None:
    raw = path.read_bytes()
    assert old.encode() in raw
    path.write_bytes(raw.replace(old.encode(), new.encode()))


def test_booleans_written_true_and_false_are_read(db, tmp_path):
    """xsd:boolean allows `true`/`false` as well as `1`/`0`: a nouvel entrant written `true` is SDD (it was
    warned "must be 0 or 1" and stored not SDD, silently lost)."""
    path = write_flux(
        tmp_path,
        [foyer(person(NIR_A, entrant=True)), foyer(person(NIR_B, sdd=False), matricule="0007777")],
        day=D1,
    )
    _rewrite(path, "<TOPPERSDRODEVORSA>1</TOPPERSDRODEVORSA>", "<TOPPERSDRODEVORSA>true</TOPPERSDRODEVORSA>")
    _rewrite(path, "<TOPPERSENTDRODEVORSA>1<", "<TOPPERSENTDRODEVORSA>true<")
    _rewrite(path, "<TOPPERSDRODEVORSA>0</TOPPERSDRODEVORSA>", "<TOPPERSDRODEVORSA>false</TOPPERSDRODEVORSA>")
    report = ingest_file(get_engine(db), db, path, IngestOptions(D1))
    assert report.status == "applied"
    assert [w for w in report.warnings if w["code"] == "invalid_flag"] == []
    with session_scope(db) as s:
        states = {(r.sdd, r.sdd_entrant) for r in s.scalars(select(PersonState))}
        assert states == {(True, True), (False, None)} or states == {(True, True), (False, False)}
        assert s.scalar(select(func.count()).select_from(EntryEpisode)) == 1


def test_a_boolean_that_is_neither_spelling_is_a_record_problem(db, tmp_path):
    path = write_flux(tmp_path, [foyer(person(NIR_A))], day=D1)
    _rewrite(path, "<TOPPERSDRODEVORSA>1</TOPPERSDRODEVORSA>", "<TOPPERSDRODEVORSA>yes</TOPPERSDRODEVORSA>")
    report = ingest_file(get_engine(db), db, path, IngestOptions(D1))
    assert report.status == "applied"
    (warning,) = [w for w in report.warnings if w["code"] == "invalid_flag"]
    assert "0, 1, true or false" in warning["message"]


def test_a_file_rejected_at_its_trailer_reports_what_it_held(db, tmp_path):
    """The report of a file refused at its trailer says how many foyers were read, the file's département
    and the options it was given, as its database row does (it said foyers 0, departement null,
    initial_stock false while the row said initial_stock 1)."""
    path = write_flux(
        tmp_path, [foyer(person(NIR_A)), foyer(person(NIR_B), matricule="0007777")], day=D1, type_flux="M"
    )
    _rewrite(path, "<NBTOTDOSRSATRANSM>00000002<", "<NBTOTDOSRSATRANSM>00000003<")
    for parallel in (False, True):  # read inline, and by the child process of big files
        report = ingest_file(get_engine(db), db, path, IngestOptions(D1, initial_stock=True, parallel=parallel))
        assert report.status == "rejected" and report.error_code == "count_mismatch"
        assert (report.foyers, report.departement, report.initial_stock) == (2, "055", True)
        with session_scope(db) as s:
            row = s.get(FluxFile, report.file_id)
            assert row is not None and row.initial_stock is True and row.status == "rejected"


def test_the_same_empty_daily_file_for_two_departements_is_two_receptions(db, tmp_path):
    """An empty daily file is byte for byte the same for every département of a CAF: each département
    records its own reception (it was recorded for 055 as a duplicate of 054's file)."""
    path = write_flux(tmp_path, [], day=D1)
    engine = get_engine(db)
    first = ingest_file(engine, db, path, IngestOptions(D1, departement="054"))
    second = ingest_file(engine, db, path, IngestOptions(D1, departement="055"))
    assert (first.status, second.status) == ("applied", "applied")
    assert second.duplicate_of is None and first.file_id != second.file_id
    again = ingest_file(engine, db, path, IngestOptions(D1, departement="055"))
    assert again.status == "duplicate" and again.duplicate_of == second.file_id
    with session_scope(db) as s:
        rows = s.execute(select(FluxFile.departement_code, FluxFile.status).order_by(FluxFile.id)).all()
    assert [tuple(r) for r in rows] == [("054", "applied"), ("055", "applied")]


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_quarantined_files_and_the_sqlite_files_are_private(db, tmp_path):
    """A quarantined flux holds NIRs in clear: mode 600 in a directory 700; so do the SQLite database and
    its audit journal (they were 644)."""
    from app.db import audit_path
    from app.flux.inbox import process_inbox

    path = write_flux(tmp_path, [foyer(person(NIR_A))], day=D1)
    _rewrite(path, "<NBTOTDOSRSATRANSM>00000001<", "<NBTOTDOSRSATRANSM>00000009<")
    report = ingest_file(get_engine(db), db, path, IngestOptions(D1))
    assert report.status == "rejected" and report.quarantine_path
    assert _mode(report.quarantine_path) == 0o600
    assert _mode(report.quarantine_path + ".report.json") == 0o600
    assert _mode(os.path.dirname(report.quarantine_path)) == 0o700

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    good = write_flux(inbox, [foyer(person(NIR_B), matricule="0007777")], day=D1)
    os.chmod(good, 0o644)  # a file dropped world-readable: it must end up 600
    (outcome,) = process_inbox(get_engine(db), db, inbox, "055", settle=0)
    assert outcome.status == "applied" and _mode(outcome.moved_to) == 0o600
    assert _mode(inbox / "processed") == 0o700 and _mode(inbox / "quarantine") == 0o700

    if db.is_sqlite:
        database = db.database_url.removeprefix("sqlite:///")
        assert _mode(database) == 0o600 and _mode(audit_path(database)) == 0o600


def test_api_answers_never_carry_a_server_path(client, db, make_api_key, tmp_path):
    key = make_api_key(["flux:write"])
    path = write_flux(tmp_path, [foyer(person(NIR_A))], day=D1)
    _rewrite(path, "<NBTOTDOSRSATRANSM>00000001<", "<NBTOTDOSRSATRANSM>00000009<")
    with path.open("rb") as fh:
        r = client.post(
            "/api/v1/flux",
            headers={"X-API-Key": key},
            files={"file": ("flux.xml", fh, "application/xml")},
            data={"received_on": D1.isoformat()},
        )
    assert r.status_code == 422, r.text
    details = r.json()["details"]
    assert "quarantine_path" not in details and details["quarantine_id"].endswith("flux.xml")
    assert str(db.data_dir) not in r.text
    shown = client.get(f"/api/v1/flux/{details['file_id']}", headers={"X-API-Key": key})
    assert shown.status_code == 200 and str(db.data_dir) not in shown.text
    assert shown.json()["report"]["quarantine_id"] == details["quarantine_id"]


def test_a_record_without_its_blocks_keeps_the_known_state_and_address(db, tmp_path):
    """A daily record carrying only IdentificationRSA and Personne (as in public fixtures), after a full file
    that said "state 2, address in Verdun": the state and the address are kept (they were erased, silently),
    the person-level news it carries is applied, and the report warns `block_missing`."""
    import re

    engine = get_engine(db)
    full = write_flux(_dir(tmp_path, "m"), [foyer(person(NIR_A, sdd=False))], day=D1, type_flux="M")
    assert ingest_file(engine, db, full, IngestOptions(D1, initial_stock=True)).status == "applied"

    day2 = date(2024, 3, 4)
    daily = write_flux(_dir(tmp_path, "i"), [foyer(person(NIR_A, sdd=True, entrant=True))], day=day2)
    raw = daily.read_bytes()
    for block in (b"DonneesAdministratives", b"PrestationRSA"):
        raw, n = re.subn(b"<" + block + b">.*?</" + block + b">", b"", raw, flags=re.DOTALL)
        assert n == 1
    daily.write_bytes(raw)
    report = ingest_file(engine, db, daily, IngestOptions(day2))
    assert report.status == "applied"
    assert sorted(w["code"] for w in report.warnings) == ["block_missing", "block_missing"]
    with session_scope(db) as s:
        first, second = s.scalars(select(PersonState).order_by(PersonState.received_on)).all()
        assert (first.etat, first.numcom, first.sdd) == ("2", "55545", False)
        assert (second.etat, second.numcom, second.nomcom, second.sdd) == ("2", "55545", "VERDUN", True)
        assert second.adresse == first.adresse and second.sitfam == first.sitfam
        assert second.ddnatdro == first.ddnatdro
    refresh_pending(engine)
    with session_scope(db) as s:
        (ep,) = s.scalars(select(EntryEpisode)).all()  # SDD with a right still versable: a nouvel entrant
        assert ep.t0 == day2


def test_a_blockless_record_repeating_what_is_known_adds_no_state(db, tmp_path):
    import re

    engine = get_engine(db)
    full = write_flux(_dir(tmp_path, "m"), [foyer(person(NIR_A))], day=D1, type_flux="M")
    assert ingest_file(engine, db, full, IngestOptions(D1, initial_stock=True)).status == "applied"
    day2 = date(2024, 3, 4)
    daily = write_flux(_dir(tmp_path, "i"), [foyer(person(NIR_A))], day=day2)
    daily.write_bytes(re.sub(b"<PrestationRSA>.*?</PrestationRSA>", b"", daily.read_bytes(), flags=re.DOTALL))
    report = ingest_file(engine, db, daily, IngestOptions(day2))
    assert report.status == "applied" and report.unchanged == 1 and report.state_changes == 0


def _dir(base, name):
    path = base / name
    path.mkdir(exist_ok=True)
    return path


def test_a_state_6_right_keeps_its_closure_from_findroitmoisanterieur(db, tmp_path):
    """State 6 (closed on a previous month) carries its closure in FinDroitMoisAnterieur: the motive (MUT:
    moved away, not radiated) and the date are stored (they were dropped)."""
    path = write_flux(_dir(tmp_path, "i"), [foyer(person(NIR_A), etat="6", closure=("MUT", date(2024, 2, 29)))], day=D1)
    _rewrite(path, "<FinDroit>", "<FinDroitMoisAnterieur>")
    _rewrite(path, "</FinDroit>", "</FinDroitMoisAnterieur>")
    report = ingest_file(get_engine(db), db, path, IngestOptions(D1))
    assert report.status == "applied"
    with session_scope(db) as s:
        (state,) = s.scalars(select(PersonState)).all()
        assert (state.etat, state.closure_motif, state.closure_date) == ("6", "MUT", date(2024, 2, 29))


def _transfers(path, out_on: str, in_on: str) -> None:
    _rewrite(
        path,
        IDENTIFICATION_END,
        transfer_blocks(cedant=("CAF", "541", "0009999", in_on), prenant=("CAF", "541", out_on)),
    )


def test_a_transfer_out_before_a_later_transfer_in_is_not_a_move_away(db, tmp_path):
    """A person who left for another CAF and came back: the departure dated before the arrival does not
    close the follow-up as a move away (its mere presence did); a departure after the arrival does."""
    from app.orientation.episodes import compute_for

    engine = get_engine(db)
    stock = write_flux(_dir(tmp_path, "m"), [foyer(person(NIR_A))], day=D1, type_flux="M")
    assert ingest_file(engine, db, stock, IngestOptions(D1, initial_stock=True)).status == "applied"
    followed = {}
    for name, out_on, in_on in (("back", "2024-01-10", "2024-03-02"), ("gone", "2024-03-05", "2024-01-10")):
        day = date(2024, 3, 4) if name == "back" else date(2024, 3, 6)
        daily = write_flux(_dir(tmp_path, name), [foyer(person(NIR_A))], day=day)
        _transfers(daily, out_on, in_on)
        assert ingest_file(engine, db, daily, IngestOptions(day)).status == "applied"
        with engine.connect() as conn:
            pid = conn.execute(select(PersonState.person_id)).scalars().first()
            followed[name] = compute_for(conn, [pid])[pid].followed
    assert followed == {"back": True, "gone": False}


def test_a_person_without_nir_is_followed_across_a_transfer_by_matriculeorgcedmut(db, tmp_path):
    """No NIR, a new name (marriage), a new organisme and matricule: OrganismeCedant's MATRICULEORGCEDMUT is
    the only link to the person's history, and it is followed (the person was a new one)."""
    from app.models import Person

    engine = get_engine(db)
    msa = foyer(person(None, nom="MARTIN"), fonorg="MSA", numorg="552", matricule="0005555")
    stock = write_flux(_dir(tmp_path, "m"), [msa], day=D1, type_flux="M", fonorg="MSA")
    assert ingest_file(engine, db, stock, IngestOptions(D1, initial_stock=True)).status == "applied"
    day = date(2024, 3, 4)
    caf = foyer(person(None, nom="MARTIN-DURAND"), matricule="0001234")
    daily = write_flux(_dir(tmp_path, "i"), [caf], day=day)
    _rewrite(daily, IDENTIFICATION_END, transfer_blocks(cedant=("MSA", "552", "0005555", "2024-03-01")))
    report = ingest_file(engine, db, daily, IngestOptions(day))
    assert report.status == "applied" and report.new_persons == 0 and report.matched_by == {"matricule": 1}
    with session_scope(db) as s:
        (only,) = s.scalars(select(Person)).all()
        assert only.nom == "MARTIN-DURAND"
        assert s.scalar(select(func.count()).select_from(PersonState)) == 2


def test_keys_two_persons_of_a_file_share_are_reported_and_merge_nobody(db, tmp_path):
    """Public fixtures hold a foyer with two CJT and no DEM, and two foyers sharing one NUMDEMRSA: nobody is
    merged or dropped, the shared keys move to neither person, and the report says so (without values)."""
    from app.models import AmbiguousKey, Person, PersonKey

    two_cjt = foyer(
        person(NIR_A, role="CJT", nom="DUPONT", prenom="JEAN"),
        person(NIR_B, role="CJT", nom="DURAND", prenom="LEA", sexe="2", dtnai=date(1992, 5, 5)),
        matricule="0001111",
    )
    shared_a = foyer(person(NIR_C), matricule="0002222", numdemrsa="55000009999")
    shared_b = foyer(person(None, nom="PETIT", prenom="ANNE", sexe="2"), matricule="0003333", numdemrsa="55000009999")
    path = write_flux(tmp_path, [two_cjt, shared_a, shared_b], day=D1, type_flux="M")
    report = ingest_file(get_engine(db), db, path, IngestOptions(D1, initial_stock=True))
    assert report.status == "applied" and report.new_persons == 4
    ambiguous = [w["message"] for w in report.warnings if w["code"] == "key_ambiguous"]
    where = {(m.split(":")[0], m.split("its ")[1].split(" key")[0]) for m in ambiguous}
    assert where == {
        ("foyer 1, person 2", "matricule"),  # the two CJT of one foyer
        ("foyer 1, person 2", "numdemrsa"),
        ("foyer 2, person 1", "identity"),  # two DUPONT JEAN born the same day, two NIRs: homonyms
        ("foyer 3, person 1", "numdemrsa"),  # two foyers, one NUMDEMRSA
    }
    assert not any(x in m for m in ambiguous for x in ("0001111", "55000009999", NIR_A, NIR_B))
    with session_scope(db) as s:
        assert s.scalar(select(func.count()).select_from(Person)) == 4
        # a shared key identifies neither person: not kept by the first, not given to the second
        owners = dict(
            s.execute(
                select(PersonKey.kind, func.count(func.distinct(PersonKey.person_id))).group_by(PersonKey.kind)
            ).all()
        )
        assert "numdemrsa" not in owners
        assert owners["matricule"] == 2  # foyers 2 and 3 have their own; foyer 1's two CJT shared theirs
        recorded = sorted(s.scalars(select(AmbiguousKey.kind)).all())
        assert recorded == ["identity", "matricule", "numdemrsa", "numdemrsa"]


def test_accented_names_in_windows_1252_and_an_overseas_departement(db, tmp_path):
    """Fixtures declare windows-1252 but are pure ASCII: accented names (É, Ç, Œ, which latin-1 lacks) are
    the case to test. An overseas département (974) with a 4-character TYPEPARTE is read as such."""
    from app.models import Person

    people = [
        foyer(person(NIR_A, nom="LEFÈVRE", prenom="ÉLODIE", sexe="2")),
        foyer(person(NIR_B, nom="FRANÇOIS", prenom="CŒUR"), matricule="0007777"),
    ]
    path = write_flux(tmp_path, people, day=D1, encoding="windows-1252", departement="974")
    assert "Œ".encode("cp1252") in path.read_bytes()
    _rewrite(path, "<TYPEPARTE>CG</TYPEPARTE>", "<TYPEPARTE>CG  </TYPEPARTE>")
    report = ingest_file(get_engine(db), db, path, IngestOptions(D1))
    assert report.status == "applied" and report.departement == "974" and report.warnings_count <= 1
    with session_scope(db) as s:
        names = {(p.nom, p.prenom, p.departement_code) for p in s.scalars(select(Person))}
    assert names == {("LEFÈVRE", "ÉLODIE", "974"), ("FRANÇOIS", "CŒUR", "974")}


def test_private_directories_and_the_parents_they_create_are_700(tmp_path):
    from app.kit.files import private_dir

    os.chmod(tmp_path, 0o755)  # noqa: S103 - an existing parent keeps its mode: what the test checks
    private_dir(tmp_path / "a" / "b" / "c")
    assert [_mode(tmp_path / p) for p in ("a", "a/b", "a/b/c")] == [0o700] * 3
    assert _mode(tmp_path) == 0o755


def test_a_field_longer_than_its_column_rejects_its_foyer_not_the_file(db, tmp_path):
    """A NUMORG of 4 characters (found by the mutation test) reached `person_states.numorg` (3): PostgreSQL
    refused the whole file mid-way with a database error, SQLite stored it. It is a record problem: the
    foyer is rejected, named, and the others are applied, on both databases."""
    path = write_flux(
        tmp_path, [foyer(person(NIR_A)), foyer(person(NIR_B, prenom="MARIE"), matricule="0007777")], day=D1
    )
    _rewrite(path, "<NUMORG>551</NUMORG><MATRICULE>0007777", "<NUMORG>&gt;551</NUMORG><MATRICULE>0007777")
    long_name = "X" * 150
    path2 = write_flux(_dir(tmp_path, "n"), [foyer(person(NIR_C, nom=long_name), matricule="0008888")], day=D1)
    for file, code in ((path, "invalid_field"), (path2, "invalid_field")):
        report = ingest_file(get_engine(db), db, file, IngestOptions(D1))
        assert report.status == "applied", report.error
        assert [r["code"] for r in report.rejected] == [code]
        assert "longer than" in report.rejected[0]["message"] and long_name not in report.rejected[0]["message"]
    with session_scope(db) as s:
        assert s.scalar(select(func.count()).select_from(PersonState)) == 1


def test_a_refused_demand_keeps_its_refusal_date_and_motive(db, tmp_path):
    """Refus (DTREFURSA, MOTIREFURSA) was dropped: stored, shown in the person's state."""
    path = write_flux(_dir(tmp_path, "i"), [foyer(person(NIR_A, sdd=False), etat="1")], day=D1)
    _rewrite(path, STATE_END, refusal_block("2024-02-20", "DSD"))
    report = ingest_file(get_engine(db), db, path, IngestOptions(D1))
    assert report.status == "applied" and report.warnings_count == 1  # no_initial_stock only
    with session_scope(db) as s:
        (state,) = s.scalars(select(PersonState)).all()
        assert (state.etat, state.refusal_motif, state.refusal_date) == ("1", "DSD", date(2024, 2, 20))


def test_an_address_abroad_keeps_its_country_and_lines(db, tmp_path):
    """AdresseHorsFrance is an address, not an empty one: the country (PAYS) and its lines are stored; a
    French address stores no country (its state keeps the fingerprint it had before the column existed)."""
    path = write_flux(
        _dir(tmp_path, "i"), [foyer(person(NIR_A)), foyer(person(NIR_B, nom="MARTIN"), matricule="0007777")], day=D1
    )
    raw = path.read_bytes()
    first_end = raw.index(b"</InfosFoyerRSA>")
    path.write_bytes(abroad(raw[:first_end]) + raw[first_end:])
    assert ingest_file(get_engine(db), db, path, IngestOptions(D1)).status == "applied"
    with session_scope(db) as s:
        there, here = s.scalars(select(PersonState).order_by(PersonState.seq)).all()
        assert (there.pays, there.adresse, there.numcom) == ("BEL", "RUE DE LA LOI 16 / 1000 BRUXELLES", None)
        assert (here.pays, here.numcom) == (None, "55545")


def test_the_new_columns_leave_the_fingerprint_of_states_without_them_unchanged():
    """States stored before the refusal and the country existed keep their fingerprint: the formula is the
    old one (every value but the last, TOPPERSENTDRODEVORSA) as long as the new values are empty."""
    import hashlib

    from app.flux.derive import EXTENSION_COLUMNS, STATE_COLUMNS, fingerprint

    values = {c: f"v{i}" for i, c in enumerate(STATE_COLUMNS)} | dict.fromkeys(EXTENSION_COLUMNS)
    state = tuple(values[c] for c in STATE_COLUMNS)
    old_layout = tuple(values[c] for c in STATE_COLUMNS[:-1] if c not in EXTENSION_COLUMNS)
    assert fingerprint(state) == hashlib.blake2b(repr(old_layout).encode(), digest_size=16).hexdigest()
    refused = tuple("DSD" if c == "refusal_motif" else v for c, v in zip(STATE_COLUMNS, state, strict=True))
    assert fingerprint(refused) != fingerprint(state)


def test_a_refusal_motive_or_country_too_long_for_its_column_is_a_record_problem(db, tmp_path):
    path = write_flux(_dir(tmp_path, "i"), [foyer(person(NIR_A)), foyer(person(NIR_B), matricule="0007777")], day=D1)
    raw = path.read_bytes().replace(STATE_END.encode(), refusal_block("2024-02-20", "DSDX").encode(), 1)
    path.write_bytes(raw.replace(b"<PAYS>FRA</PAYS>", b"<PAYS>BELG</PAYS>", 2).replace(b"<PAYS>BELG", b"<PAYS>FRA", 1))
    report = ingest_file(get_engine(db), db, path, IngestOptions(D1))
    assert report.status == "applied" and report.rejected_count == 2  # both foyers, each naming its field
    messages = sorted(r["message"] for r in report.rejected)
    assert "refusal_motif is longer than 3 characters" in messages[0] and "pays is longer" in messages[1]
    assert "DSDX" not in str(report.rejected) and "BELG" not in str(report.rejected)


def test_a_date_of_death_is_stored_and_ends_the_entry_episode(db, tmp_path):
    """DTDC (VRSD0301, in the person's Identification): stored with the state, shown, and the nouvel
    entrant's episode ends the day the file says so."""
    engine = get_engine(db)
    stock = write_flux(_dir(tmp_path, "m"), [foyer(person(NIR_A, sdd=False))], day=D1, type_flux="M")
    assert ingest_file(engine, db, stock, IngestOptions(D1, initial_stock=True)).status == "applied"
    day2, day3 = date(2024, 3, 4), date(2024, 3, 11)
    entry = write_flux(_dir(tmp_path, "i"), [foyer(person(NIR_A, sdd=True, entrant=True))], day=day2)
    assert ingest_file(engine, db, entry, IngestOptions(day2)).status == "applied"
    death = write_flux(_dir(tmp_path, "j"), [foyer(person(NIR_A, sdd=True))], day=day3)
    _rewrite(death, "<SEXE>1</SEXE>", "<SEXE>1</SEXE><DTDC>2024-03-08</DTDC>")
    report = ingest_file(engine, db, death, IngestOptions(day3))
    assert report.status == "applied" and report.state_changes == 1, report.to_dict()
    refresh_pending(engine)
    with session_scope(db) as s:
        last = s.scalars(select(PersonState).order_by(PersonState.received_on.desc())).first()
        assert last is not None and last.death_date == date(2024, 3, 8)
        (ep,) = s.scalars(select(EntryEpisode)).all()
        assert (ep.t0, ep.outcome, ep.end_on) == (day2, "sorti_avant_orientation", day3)


def test_a_key_two_persons_of_different_files_carry_identifies_neither_whatever_the_order(db, tmp_path):
    """Two foyers with one NUMDEMRSA, in two files: the demand-number key was moved to the latest holder,
    so a later record without NIR could be given the other person's history. It now identifies neither
    (recorded once, reported), the persons are told apart by NIR then names and birth date, and the result
    is the same in both orders."""
    from app.models import AmbiguousKey, Person, PersonKey
    from tests.support.database import truncate

    day2, day3 = date(2024, 3, 4), date(2024, 3, 11)
    first = write_flux(
        _dir(tmp_path, "a"), [foyer(person(NIR_A), matricule="0002222", numdemrsa="55000009999")], day=D1
    )
    other = foyer(
        person(NIR_B, nom="PETIT", prenom="ANNE", sexe="2", dtnai=date(1985, 6, 2)),
        matricule="0003333",
        numdemrsa="55000009999",
    )
    second = write_flux(_dir(tmp_path, "b"), [other], day=day2)
    # the second foyer's person again, without NIR: found by their foyer's matricule, never as the first
    again = foyer(
        person(None, nom="PETIT", prenom="ANNE", sexe="2", dtnai=date(1985, 6, 2), sdd=False),
        matricule="0003333",
        numdemrsa="55000009999",
    )
    third = write_flux(_dir(tmp_path, "c"), [again], day=day3)
    engine = get_engine(db)
    results = []
    for order in ([(first, D1), (second, day2)], [(second, day2), (first, D1)]):
        truncate(db)
        reports = [ingest_file(engine, db, path, IngestOptions(day)) for path, day in order]
        assert [w["code"] for w in reports[1].warnings if w["code"] == "key_ambiguous"] == ["key_ambiguous"]
        assert "earlier file" in next(w["message"] for w in reports[1].warnings if w["code"] == "key_ambiguous")
        last = ingest_file(engine, db, third, IngestOptions(day3))
        assert last.status == "applied" and last.new_persons == 0 and last.matched_by == {"matricule": 1}
        assert not [w for w in last.warnings if w["code"] == "key_ambiguous"]  # said once, when found
        with session_scope(db) as s:
            petit = s.scalars(select(Person).where(Person.nom == "PETIT")).one()
            states = s.scalars(select(PersonState).where(PersonState.person_id == petit.id)).all()
            assert sorted((st.received_on, st.sdd) for st in states) == [(day2, True), (day3, False)]
            results.append(
                (
                    sorted(s.scalars(select(PersonKey.kind)).all()),
                    s.scalars(select(AmbiguousKey.kind)).all(),
                )
            )
    assert results[0] == results[1]
    assert results[0][1] == ["numdemrsa"] and "numdemrsa" not in results[0][0]


def test_a_second_engine_on_a_live_sqlite_file_keeps_the_locks_of_the_first(tmp_path, settings):
    """Making an engine used to open and close the database file to set its mode: closing a descriptor drops
    every POSIX lock the process holds on the file, SQLite's too, so another process ending its last
    connection deleted the WAL under the live ones ("database disk image is malformed" in the test suite,
    after a `passerelle` subprocess exited). The WAL must outlive the other process's connection."""
    import subprocess
    import sys

    from sqlalchemy import text

    from app.db import make_engine

    database = tmp_path / "live.db"
    url = f"sqlite:///{database.as_posix()}"
    first = make_engine(url, settings)
    with first.begin() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
    assert (tmp_path / "live.db-wal").exists()  # the pooled connection is still open
    second = make_engine(url, settings, pooled=False)  # as a maintenance command does, in the same process
    other = (
        f"import sqlite3; c = sqlite3.connect({str(database)!r}); c.execute('SELECT n FROM t').fetchall(); c.close()"
    )
    subprocess.run([sys.executable, "-c", other], check=True)
    assert (tmp_path / "live.db-wal").exists(), "another process deleted the WAL of live connections"
    with first.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (2)"))
    with second.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 2
        assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    first.dispose()
    second.dispose()
