"""The stored facts and everything derived from them are the same whatever order the files arrive in
(issue #9, item 9; docs/rules.md "Order of arrival"), on SQLite and PostgreSQL.

Each hand-written case ingests the same files in date order and in another order, compares everything
(`tests/support/orderproof.py`: the facts, persons, episodes and indicator, keyed by what identifies a person),
and checks the facts themselves. The last test does it at the size that showed the bug."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.db import get_engine, session_scope
from app.flux.generator import generate
from app.flux.loader import IngestOptions, ingest_file
from app.models import EntryEpisode, FluxObservation, Person, PersonState
from app.orientation.episodes import refresh_pending
from app.orientation.service import import_csv
from app.persons.order import KIND_RANK, state_order
from app.security.nir import NirProtector
from tests.support.database import truncate
from tests.support.fluxbuilder import NIR_A, NIR_B, foyer, person, write_flux
from tests.support.orderproof import Snapshot, ingest_all, orders, snapshot

D0 = date(2024, 3, 1)  # the initial stock
D2 = date(2024, 3, 12)
D3 = date(2024, 3, 19)
OTHER = {"nom": "MARTIN", "prenom": "ANNE", "sexe": "2", "dtnai": date(1985, 6, 2)}  # not a homonym of NIR_A
END = date(2024, 4, 30)

File = tuple[Path, date, bool]  # (path, received on, initial stock)


def _file(tmp_path: Path, name: str, foyers, day: date, type_flux: str = "I") -> Path:
    directory = tmp_path / name
    directory.mkdir()
    return write_flux(directory, foyers, day=day, type_flux=type_flux)


def _ingest(db, files: list[File]) -> Snapshot:
    truncate(db)
    engine = get_engine(db)
    for path, received, stock in files:
        report = ingest_file(engine, db, path, IngestOptions(received, initial_stock=stock), refresh=False)
        assert report.status == "applied", report.to_dict()
    refresh_pending(engine)
    return snapshot(db, "055", D0, END, END)


def _same_in_both_orders(db, in_date_order: list[File], arrival: list[File]) -> Snapshot:
    expected = _ingest(db, in_date_order)
    got = _ingest(db, arrival)
    assert got.differences(expected) == [], "\n".join(got.differences(expected))
    return got


def _facts(db) -> list[tuple]:
    """(reception date, present, absence reason, sdd, numcom) of the only person's facts, in order."""
    with session_scope(db) as s:
        rows = s.scalars(select(PersonState).order_by(*state_order(PersonState))).all()
        return [(r.received_on, r.present, r.absence_reason, r.sdd, r.numcom) for r in rows]


def test_a_change_carried_by_a_late_earlier_file_is_kept_and_what_followed_it_comes_back(db, tmp_path):
    """The seen bug: a person SDD in the stock, out of SDD on D2, back on D3. Files D3 then D2: D3's record,
    equal to the stock, was dropped as unchanged; when D2 came, the exit was stored and the return lost."""
    stock = _file(tmp_path, "stock", [foyer(person(NIR_A))], D0, "M")
    out = _file(tmp_path, "out", [foyer(person(NIR_A, sdd=False))], D2)
    back = _file(tmp_path, "back", [foyer(person(NIR_A))], D3)
    files = [(stock, D0, True), (out, D2, False), (back, D3, False)]
    _same_in_both_orders(db, files, [files[0], files[2], files[1]])
    assert [(d, sdd) for d, _p, _r, sdd, _c in _facts(db)] == [(D0, True), (D2, False), (D3, True)]


def test_a_later_record_that_a_late_file_makes_redundant_is_no_longer_a_fact(db, tmp_path):
    """Stock SDD; D3 says "not SDD" (a fact, applied first); D2 arrives late saying the same: the change is
    D2's, and D3 changes nothing any more."""
    stock = _file(tmp_path, "stock", [foyer(person(NIR_A))], D0, "M")
    early = _file(tmp_path, "early", [foyer(person(NIR_A, sdd=False))], D2)
    later = _file(tmp_path, "later", [foyer(person(NIR_A, sdd=False))], D3)
    files = [(stock, D0, True), (early, D2, False), (later, D3, False)]
    _same_in_both_orders(db, files, [files[0], files[2], files[1]])
    assert [(d, sdd) for d, _p, _r, sdd, _c in _facts(db)] == [(D0, True), (D2, False)]


def test_a_record_without_blocks_keeps_what_a_late_earlier_file_said(db, tmp_path):
    """A daily record without DonneesAdministratives keeps the address in force at its date: when the file
    that moved the person arrives after it, the kept address is the new one, as in date order."""
    stock = _file(tmp_path, "stock", [foyer(person(NIR_A, sdd=False))], D0, "M")
    moved = _file(tmp_path, "moved", [foyer(person(NIR_A, sdd=False), commune=("55029", "55000", "BAR-LE-DUC"))], D2)
    blockless = _file(tmp_path, "blockless", [foyer(person(NIR_A, sdd=True))], D3)
    raw = re.sub(b"<DonneesAdministratives>.*?</DonneesAdministratives>", b"", blockless.read_bytes(), flags=re.S)
    blockless.write_bytes(raw)
    files = [(stock, D0, True), (moved, D2, False), (blockless, D3, False)]
    _same_in_both_orders(db, files, [files[0], files[2], files[1]])
    assert [(d, c) for d, _p, _r, _s, c in _facts(db)] == [(D0, "55545"), (D2, "55029"), (D3, "55029")]
    with session_scope(db) as s:
        # the observation now refers to the state it stands for
        prints = {r.fingerprint for r in s.scalars(select(PersonState))}
        assert {o.fingerprint for o in s.scalars(select(FluxObservation))} <= prints


def test_a_late_full_file_dates_an_absence_and_what_followed_it_comes_back(db, tmp_path):
    """A monthly file dated D2 without the person, applied after a daily file of D3 that shows them
    unchanged: absent from D2, present again from D3 (the D3 record had left no trace)."""
    stock = _file(
        tmp_path, "stock", [foyer(person(NIR_A)), foyer(person(NIR_B, **OTHER), matricule="0007777")], D0, "M"
    )
    full = _file(tmp_path, "full", [foyer(person(NIR_B, **OTHER), matricule="0007777")], D2, "M")
    daily = _file(tmp_path, "daily", [foyer(person(NIR_A))], D3)
    files = [(stock, D0, True), (full, D2, False), (daily, D3, False)]
    _same_in_both_orders(db, files, [files[0], files[2], files[1]])
    with session_scope(db) as s:
        nir_a = s.scalars(select(Person.id).order_by(Person.id)).first()
        rows = s.scalars(
            select(PersonState).where(PersonState.person_id == nir_a).order_by(PersonState.received_on)
        ).all()
        assert [(r.received_on, r.present, r.absence_reason) for r in rows] == [
            (D0, True, None),
            (D2, False, "absent_full_file"),
            (D3, True, None),
        ]


def test_a_person_a_late_file_puts_in_a_foyer_leaves_it_at_a_later_file_without_them(db, tmp_path):
    """D2 (late) adds a conjoint to the foyer; D3 (applied first) carries the foyer without them: they left
    it on D3, as in date order."""
    stock = _file(tmp_path, "stock", [foyer(person(NIR_A))], D0, "M")
    joined = _file(tmp_path, "joined", [foyer(person(NIR_A), person(NIR_B, role="CJT", **OTHER))], D2)
    alone = _file(tmp_path, "alone", [foyer(person(NIR_A, sdd=False))], D3)
    files = [(stock, D0, True), (joined, D2, False), (alone, D3, False)]
    got = _same_in_both_orders(db, files, [files[0], files[2], files[1]])
    (conjoint,) = [facts for facts in got.facts.values() if facts[0][1] == D2]
    assert [(f[1], f[2], f[3]) for f in conjoint] == [(D2, True, None), (D3, False, "left_foyer")]


def test_a_person_first_seen_in_a_late_file_keeps_the_earliest_date_and_the_latest_name(db, tmp_path):
    """The first reception is the earliest-dated file's, the name the latest-dated file's, whatever came
    first (the newest file created the person, the older one must not rename them)."""
    stock = _file(tmp_path, "stock", [foyer(person(NIR_B, **OTHER), matricule="0007777")], D0, "M")
    early = _file(tmp_path, "early", [foyer(person(NIR_A, nom="DURAND"))], D2)
    later = _file(tmp_path, "later", [foyer(person(NIR_A, nom="MARTIN"))], D3)
    files = [(stock, D0, True), (early, D2, False), (later, D3, False)]
    got = _same_in_both_orders(db, files, [files[0], files[2], files[1]])
    (person_a,) = [p for p in got.persons.values() if not p["stock"]]
    assert (person_a["first_received_on"], person_a["nom"]) == (D2, "MARTIN")


def test_a_full_file_comes_before_a_daily_file_of_the_same_instant(db, tmp_path):
    """Files created at the same instant and received the same day: the monthly file (the picture) before
    the daily file (what changed), whichever arrived first (it was the arrival order)."""
    assert KIND_RANK["R"] < KIND_RANK["M"] < KIND_RANK["I"]  # what `type_flux DESC` means in SQL
    stock = _file(tmp_path, "stock", [foyer(person(NIR_A))], D0, "M")
    monthly = _file(tmp_path, "monthly", [], D2, "M")  # closed today: no longer in the monthly file
    daily = _file(tmp_path, "daily", [foyer(person(NIR_A), etat="5", closure=("PCG", D2))], D2)
    files = [(stock, D0, True), (monthly, D2, False), (daily, D2, False)]
    _same_in_both_orders(db, files, [files[0], files[2], files[1]])
    assert [(d, p, r) for d, p, r, _s, _c in _facts(db)] == [
        (D0, True, None),
        (D2, False, "absent_full_file"),
        (D2, True, None),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("days", [90])
def test_a_generated_flux_gives_the_same_facts_episodes_and_indicator_in_any_order(db, tmp_path, days):
    """2,000 foyers over 90 days (~3,000 persons, ~140 files, monthly files included, some received late):
    in reception order, newest first, and shuffled (the initial stock first in each), every person's
    stored facts and episodes and the indicator are the same. At this size the old loader differed."""
    start = date(2024, 1, 2)
    files = generate(tmp_path / "gen", 2000, days, start, seed=3)
    runs = {}
    for name, order in orders(files).items():
        truncate(db)
        ingest_all(db, order)
        runs[name] = snapshot(db, "055", start, start + timedelta(days=days), start + timedelta(days=days))
    reference = runs.pop("reception")
    assert len(reference.persons) > 2500 and reference.indicator["nouveaux_entrants"] > 300
    assert sum(len(f) for f in reference.facts.values()) > len(reference.persons)
    for name, run in runs.items():
        assert run.differences(reference) == [], name


def test_the_operator_is_told_when_a_file_took_its_place_before_files_already_applied(db, tmp_path, monkeypatch):
    from tests.support.cli import run_cli

    stock = _file(tmp_path, "stock", [foyer(person(NIR_A))], D0, "M")
    out = _file(tmp_path, "out", [foyer(person(NIR_A, sdd=False))], D2)
    back = _file(tmp_path, "back", [foyer(person(NIR_A))], D3)
    assert run_cli(db, monkeypatch, "flux", "ingest", stock, "--received-on", D0, "--initial-stock").exit_code == 0
    in_order = run_cli(db, monkeypatch, "flux", "ingest", back, "--received-on", D3)
    assert in_order.exit_code == 0 and "re-examined" not in in_order.output
    late = run_cli(db, monkeypatch, "flux", "ingest", out, "--received-on", D2, "--json")
    assert late.exit_code == 0, late.output
    (report,) = json.loads(late.stdout)
    assert (report["later_files"], report["reexamined"], report["state_changes"]) == (1, 1, 2)
    assert json.loads(run_cli(db, monkeypatch, "flux", "show", report["file_id"]).stdout)["later_files"] == 1
    plain = run_cli(db, monkeypatch, "flux", "ingest", out, "--received-on", D2)  # a duplicate now: said so
    assert plain.exit_code == 0 and "already ingested" in plain.output


def _events_csv(db, start: date, end: date) -> list[str]:
    """The platform's rows for the generated département, as it would send them: for each nouvel entrant
    an invitation, an RDV and (for most) an orientation dated from T0, and a référent for some stock
    persons; by NIR (with the birth date for one in two), or by matricule + role for persons without one
    (when that pair names one person only). Built from a run where every file was ingested."""
    protector = NirProtector(db.encryption_keys, db.hmac_key)
    rows: list[str] = []
    with session_scope(db) as s:
        pairs: dict[tuple[str, str], set[int]] = {}
        for pid, matricule, role in s.execute(select(PersonState.person_id, PersonState.matricule, PersonState.role)):
            pairs.setdefault((matricule, role), set()).add(pid)
        by_person = {pid: pair for pair, pids in pairs.items() if len(pids) == 1 for pid in pids}
        t0s = dict(
            s.execute(select(EntryEpisode.person_id, func.min(EntryEpisode.t0)).group_by(EntryEpisode.person_id)).all()
        )
        for n, p in enumerate(s.scalars(select(Person).order_by(Person.nir_hash, Person.date_naissance))):
            if p.nir_encrypted:
                nir = protector.decrypt(p.nir_encrypted)
                ref = f"{nir};{p.date_naissance if n % 2 else ''};;"
            elif p.id in by_person:
                ref = ";;{};{}".format(*by_person[p.id])
            else:
                continue
            t0 = t0s.get(p.id)
            if t0 is None:
                if n % 7 == 0:
                    rows.append(f"{ref};referent;{start + timedelta(days=n % 30)};;CCAS de Verdun;;;")
                continue
            dates = [t0 + timedelta(days=d) for d in (1 + n % 3, 4 + n % 9, n % 45)]
            rows.append(f"{ref};invitation;{dates[0]};;;;;" + (f"inv-{n}" if n % 3 == 0 else ""))
            rows.append(f"{ref};rdv_orientation;{dates[1]};;;;{'absent' if n % 5 == 0 else 'present'};")
            if n % 4 != 3 and dates[2] <= end:
                rows.append(f"{ref};orientation;{dates[2]};DEPARTEMENT;;social;;")
    return rows


EVENTS_HEADER = (
    "nir;date_naissance;matricule;role;evenement;date;organisme;structure;type_parcours;presence;external_id"
)


def _import_events(db, rows: list[str]) -> dict:
    with session_scope(db, write=True) as session:
        report = import_csv(session, db, "055", EVENTS_HEADER + "\n" + "\n".join(rows) + "\n", recorded_by="test")
    assert report.rejected == [], report.rejected[:3]
    return {"applied": report.applied, "pending": report.pending, "known": report.already_known}


@pytest.mark.slow
def test_orientation_events_before_between_or_after_the_files_give_the_same_episodes(db, tmp_path):
    """Issue #22: the platform's CSV imported before the flux files that bring its persons, between them
    or after them (and the files in reception order or shuffled) gives the same events, episodes and
    indicator: a row whose person is not known yet waits and is applied, with its own date, when a file
    brings them. Importing the same CSV again changes nothing."""
    start, days = date(2024, 1, 2), 60
    end = start + timedelta(days=days)
    files = generate(tmp_path / "gen", 1500, days, start, seed=5)
    by_order = orders(files)
    engine = get_engine(db)

    def run(order, parts: list[list[str]], when: list[int]) -> tuple[Snapshot, list[dict], list[int]]:
        """Ingest `order`, importing parts[i] before file number when[i] (len(order): after the last)."""
        truncate(db)
        imported, timings = [], []
        for n, f in enumerate([*order, None]):
            for part, at in zip(parts, when, strict=True):
                if at == n:
                    imported.append(_import_events(db, part))
            if f is None:
                break
            report = ingest_file(
                engine, db, f.path, IngestOptions(f.received_on, initial_stock=f.initial_stock), refresh=False
            )
            assert report.status == "applied", report.to_dict()
            if report.pending_events_applied:
                timings.append(report.pending_events_ms)
        refresh_pending(engine)
        return snapshot(db, "055", start, end, end), imported, timings

    truncate(db)
    ingest_all(db, by_order["reception"])
    rows = _events_csv(db, start, end)
    print(f"\n{len(files)} files, {len(rows)} rows of events")
    assert len(rows) > 600
    reference, (after,), _ = run(by_order["reception"], [rows], [len(files)])
    assert (after["applied"], after["pending"]) == (len(rows), 0)
    assert reference.indicator["nouveaux_entrants"] > 100 and reference.indicator["orientes"] > 50, reference.indicator
    assert sum(len(e) for e in reference.events.values()) == len(rows)

    before, (kept,), timings = run(by_order["reception"], [rows], [0])
    assert (kept["applied"], kept["pending"]) == (0, len(rows))
    assert before.differences(reference) == []
    print(f"\npending events applied after {len(timings)} files: {sum(timings)} ms in all, at most {max(timings)} ms")

    thirds = [rows[0::3], rows[1::3], rows[2::3]]
    for name in ("reception", "shuffled"):
        order = by_order[name]
        split, imported, _ = run(order, thirds, [0, len(order) // 2, len(order)])
        assert split.differences(reference) == [], name
        assert imported[0]["pending"] == len(thirds[0]) and imported[1]["pending"] > 0, imported

    again = _import_events(db, rows)  # the same CSV once more: all known, nothing stored
    assert again == {"applied": 0, "pending": 0, "known": len(rows)}
    assert snapshot(db, "055", start, end, end).differences(reference) == []
