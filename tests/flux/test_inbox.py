"""`flux watch`: a file is taken only once complete, and one watcher at a time per inbox (issue #24 item 3: a
copy paused 40 s was taken after 0.2 s, quarantined as truncated and completed inside quarantine/; two
overlapping `flux watch --once` runs: one exited 4 on a file the other had moved)."""

from __future__ import annotations

import json
import os
import time

from sqlalchemy import func, select

from app.db import get_engine, session_scope
from app.flux import inbox as inbox_module
from app.flux.inbox import file_system_now, inbox_lock, process_inbox
from app.models import FluxFile
from tests.support.cli import run_cli
from tests.support.fluxbuilder import NIR_A, NIR_B, foyer, person, write_flux
from tests.support.ftsupport import cli_env, passerelle


def _inbox(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    return inbox


def _left(inbox):
    return sorted(p.name for p in inbox.iterdir() if p.is_file() and not p.name.startswith("."))


def _files(db) -> int:
    with session_scope(db) as s:
        return s.scalar(select(func.count()).select_from(FluxFile)) or 0


def test_a_file_still_being_copied_is_left_until_its_writer_is_done(db, tmp_path):
    inbox = _inbox(tmp_path)
    whole = write_flux(tmp_path, [foyer(person(NIR_A))]).read_bytes()
    copying = inbox / "CAF_551_I_20240301.xml"
    copying.write_bytes(whole[: len(whole) // 2])  # the writer pauses here
    assert process_inbox(get_engine(db), db, inbox, settle=1.0) == []
    assert _left(inbox) == [copying.name] and not list((inbox / "quarantine").iterdir())
    assert _files(db) == 0, "nothing ingested, nothing rejected"
    with copying.open("ab") as out:  # the writer goes on and finishes
        out.write(whole[len(whole) // 2 :])
    assert process_inbox(get_engine(db), db, inbox, settle=1.0) == [], "just written: still settling"
    deadline = time.monotonic() + 10
    while file_system_now(inbox) - copying.stat().st_mtime < 1.0 and time.monotonic() < deadline:
        time.sleep(0.1)
    (outcome,) = process_inbox(get_engine(db), db, inbox, settle=1.0)
    assert outcome.status == "applied" and outcome.moved_to.parent.name == "processed"


def test_a_writer_says_when_a_file_is_complete(db, tmp_path):
    inbox = _inbox(tmp_path)
    done = write_flux(inbox, [foyer(person(NIR_A))])
    (inbox / f"{done.name}.done").write_bytes(b"")
    partial = write_flux(tmp_path, [foyer(person(NIR_B))]).rename(inbox / "CAF_551_I_20240302.xml.part")
    old = time.time() - 3600
    os.utime(partial, (old, old))  # however old, a temporary name is never taken
    (outcome,) = process_inbox(get_engine(db), db, inbox, settle=3600)
    assert outcome.name == done.name and outcome.status == "applied"
    assert _left(inbox) == [partial.name], "the marker went with its file; the .part stays"


def test_a_file_that_changes_while_it_is_read_is_not_quarantined(db, tmp_path, monkeypatch):
    inbox = _inbox(tmp_path)
    whole = write_flux(tmp_path, [foyer(person(NIR_A))]).read_bytes()
    path = inbox / "CAF_551_I_20240301.xml"
    path.write_bytes(whole[:200])
    real = inbox_module.ingest_file

    def ingest_while_written(engine, settings, target, options):
        report = real(engine, settings, target, options)  # read truncated: rejected
        with target.open("ab") as out:  # ... while its writer was still at it
            out.write(whole[200:])
        return report

    monkeypatch.setattr(inbox_module, "ingest_file", ingest_while_written)
    assert process_inbox(get_engine(db), db, inbox, settle=0) == []
    assert _left(inbox) == [path.name] and not list((inbox / "quarantine").iterdir())
    monkeypatch.setattr(inbox_module, "ingest_file", real)
    (outcome,) = process_inbox(get_engine(db), db, inbox, settle=0)
    assert outcome.status == "applied"


def test_one_watcher_per_inbox(db, monkeypatch, tmp_path):
    inbox = _inbox(tmp_path)
    write_flux(inbox, [foyer(person(NIR_A))])
    with inbox_lock(inbox):
        r = run_cli(db, monkeypatch, "flux", "watch", inbox, "--once", "--settle", "0")
    assert r.exit_code == 5, r.output
    assert "another `passerelle flux watch` is processing" in r.output and "nothing was done" in r.output
    assert len(_left(inbox)) == 1 and _files(db) == 0


def test_two_overlapping_watchers_take_each_file_once(db, tmp_path):
    inbox = _inbox(tmp_path)
    for n in range(4):
        write_flux(inbox, [foyer(person(NIR_A if n % 2 else NIR_B), matricule=f"000{n}")], name=f"CAF_{n}.xml")
    env = cli_env(db, "http://127.0.0.1:9")
    procs = [passerelle("flux", "watch", str(inbox), "--once", "--settle", "0", "--json", env=env) for _ in range(2)]
    results = [(p.wait(timeout=180), p.stdout.read(), p.stderr.read()) for p in procs]
    assert sorted(code for code, _, _ in results) in ([0, 0], [0, 5]), results
    taken = [json.loads(line)["file"] for _, out, _ in results for line in out.splitlines()]
    assert sorted(taken) == [f"CAF_{n}.xml" for n in range(4)], results
    assert _left(inbox) == [] and len(list((inbox / "processed").iterdir())) == 4
