"""`passerelle flux ...`: ingest (exit codes, JSON), generate (deterministic), watch an inbox."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from datetime import date

from tests.support.cli import run_cli
from tests.support.fluxbuilder import NIR_B, foyer, person, write_flux


def test_ingest_reports_and_exit_codes(db, monkeypatch, tmp_path):
    good = write_flux(tmp_path, [foyer()], type_flux="M")
    r = run_cli(db, monkeypatch, "flux", "ingest", good, "--received-on", "2024-03-01", "--initial-stock", "--json")
    assert r.exit_code == 0, r.output
    (report,) = json.loads(r.stdout)
    assert report["status"] == "applied" and report["initial_stock"] is True

    bad = tmp_path / "bad.xml"
    bad.write_text("<Racine>", encoding="utf-8")
    other = write_flux(tmp_path, [foyer(person(NIR_B))], day=date(2024, 3, 4))
    r = run_cli(db, monkeypatch, "flux", "ingest", bad, other, "--received-on", "2024-03-04")
    assert r.exit_code == 1, "a rejected file makes the run fail"
    assert "rejected" in r.output and "applied" in r.output

    r = run_cli(db, monkeypatch, "flux", "ingest", good, "--received-on", "03/01/2024")
    assert r.exit_code == 2 and "YYYY-MM-DD" in r.output
    r = run_cli(db, monkeypatch, "flux", "ingest", tmp_path / "missing.xml")
    assert r.exit_code == 2

    listed = json.loads(run_cli(db, monkeypatch, "flux", "list", "--json").stdout)
    assert [(f["filename"], f["status"]) for f in listed][:2] == [(other.name, "applied"), ("bad.xml", "rejected")]


def test_generate_is_deterministic(db, monkeypatch, tmp_path):
    args = ["flux", "generate", "--foyers", "150", "--days", "10", "--start", "2024-03-01", "--seed", "4"]
    assert run_cli(db, monkeypatch, *args, "--out", tmp_path / "a").exit_code == 0
    assert run_cli(db, monkeypatch, *args, "--out", tmp_path / "b").exit_code == 0
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert "manifest.json" in names and any("_M_" in n for n in names) and any("MSA" in n for n in names)
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest[0]["initial_stock"] is True
    assert {m["type"] for m in manifest} == {"M", "I"}


def test_generated_life_is_ingested_without_problems(db, tmp_path):
    from app.db import get_engine
    from app.flux.generator import generate
    from app.flux.loader import IngestOptions, ingest_file

    files = generate(tmp_path, 300, 40, date(2024, 3, 1), seed=11)
    totals: dict[str, int] = {}
    for f in files:
        report = ingest_file(
            get_engine(db),
            db,
            f.path,
            IngestOptions(
                received_on=f.received_on, initial_stock=f.created_on == date(2024, 3, 1) and f.type_flux == "M"
            ),
        )
        assert report.status == "applied", report.error
        assert report.rejected_count == 0, report.rejected
        for key in ("new_persons", "state_changes", "absences", "unchanged"):
            totals[key] = totals.get(key, 0) + getattr(report, key)
        for kind, n in report.matched_by.items():
            totals[kind] = totals.get(kind, 0) + n
    assert totals["absences"] > 0 and totals["unchanged"] > 0 and totals["state_changes"] > totals["new_persons"]
    assert totals.get("matricule", 0) > 0, "persons without NIR are followed by their matricule"


def test_watch_moves_files(db, monkeypatch, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    good = write_flux(inbox, [foyer()])
    stamp = time.mktime((2024, 3, 1, 9, 0, 0, 0, 0, -1))
    os.utime(good, (stamp, stamp))
    (inbox / "broken.xml").write_text("<Racine>", encoding="utf-8")
    r = run_cli(db, monkeypatch, "flux", "watch", inbox, "--once", "--settle", "0")
    assert r.exit_code == 1, r.output  # a file it took was rejected: cron must see it (issue #10)
    assert "rejected broken.xml" in r.output and "truncated" in r.output
    assert (inbox / "processed" / good.name).exists()
    assert (inbox / "quarantine" / "broken.xml").exists()
    assert [p.name for p in inbox.iterdir() if p.is_file() and not p.name.startswith(".")] == []  # but its lock
    shown = json.loads(run_cli(db, monkeypatch, "flux", "list", "--json").stdout)
    assert shown[-1]["received_on"] == "2024-03-01", "the reception date is the day the file landed"


def test_ingest_reads_the_first_file_in_a_process_started_before_the_checks(db, monkeypatch, tmp_path):
    """Issue #27: `flux ingest` starts the first file's reading process before its imports and its database
    checks. Two files in one command (the second read as usual), then the same again (duplicates: the
    early reading process is stopped unread), then a file whose reading process was started when the
    options turn out wrong: nothing applied, no process left."""
    monkeypatch.setenv("PASSERELLE_INGEST_PARALLEL_MIN_BYTES", "1")  # every file read by a child process
    stock = write_flux(tmp_path, [foyer(), foyer(person(NIR_B), matricule="0002")], type_flux="M")
    r = run_cli(db, monkeypatch, "flux", "ingest", stock, "--received-on", "2024-03-01", "--initial-stock")
    assert r.exit_code == 0, r.output
    first = write_flux(tmp_path, [foyer(person(NIR_B, sdd=False), matricule="0002")], day=date(2024, 3, 4))
    second = write_flux(tmp_path, [foyer(person(NIR_B), matricule="0002")], day=date(2024, 3, 5))
    args = ("flux", "ingest", first, second, "--received-on", "2024-03-05", "--json")
    r = run_cli(db, monkeypatch, *args)
    assert r.exit_code == 0, r.output
    assert [(x["status"], x["state_changes"]) for x in json.loads(r.stdout)] == [("applied", 1), ("applied", 1)]
    r = run_cli(db, monkeypatch, *args)
    assert r.exit_code == 0, r.output
    assert [x["status"] for x in json.loads(r.stdout)] == ["duplicate", "duplicate"]
    again = write_flux(tmp_path, [foyer()], type_flux="M", day=date(2024, 3, 6))
    r = run_cli(db, monkeypatch, "flux", "ingest", again, "--received-on", "2024-03-06", "--initial-stock")
    assert r.exit_code == 2 and "initial stock" in r.output, r.output
    assert multiprocessing.active_children() == []
    listed = json.loads(run_cli(db, monkeypatch, "flux", "list", "--json").stdout)
    assert sorted(f["status"] for f in listed) == ["applied", "applied", "applied"]
