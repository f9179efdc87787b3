"""The nightly jobs under kill -9 (issue #24): each long job that only touches the database — `flux ingest`
of an initial stock, `flux watch --once`, `episodes refresh`, `purge`, `keys rotate nir` — runs as a separate
process and is killed (SIGKILL to its process group: no handler runs) early, midway and late in its run;
the same command run again must then end with exactly the business state an uninterrupted run leaves from
the same starting state, a sound database (SQLite's integrity check), a verified audit chain, and no
process left behind. Two copies of a job started together: neither fails as a bug (exit 4), one may say it
is busy (exit 5), and the state is one run's. On SQLite and PostgreSQL (PASSERELLE_TEST_DATABASE_URL).

The moments are fractions of an uninterrupted run's duration measured on the same starting state, and
the moment its first commit shows in the database; a kill that lands after the job ended (a fast machine)
is harmless, the test then checks a plain re-run (at least one kill must land while it runs). The window
between a file's commit and the end of its entry episodes' refresh, which those moments hit only
sometimes, has a test of its own."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select, text

from app.admin.keys import NIR_ENCRYPTED
from app.admin.purge import PERSON_TABLES, _table
from app.clock import today
from app.db import dispose_engines, get_engine
from app.errors import ExitCode
from app.flux.generator import FluxGenerator, generate_single
from app.flux.loader import IngestOptions, ingest_file
from app.models.base import Base
from app.security.nir import NirProtector
from app.settings import Settings
from tests.support.database import truncate
from tests.support.ftsupport import cli_env, passerelle

pytestmark = pytest.mark.slow

FOYERS = 800  # a monthly file that takes about a second to apply
MOMENTS = {"early": 0.25, "midway": 0.55, "late": 0.85}  # fractions of an uninterrupted run's duration
NO_FAKE = "http://127.0.0.1:9"  # none of these jobs calls France Travail

# What two runs may legitimately differ in: row ids and the ids naming other rows (a rolled-back insert
# consumes PostgreSQL sequence values: the re-run's file is #2), timestamps, durations, ciphertexts (a fresh
# nonce each time; compared decrypted).
VOLATILE = {"id", "file_id", "first_file_id", "updated_file_id", "split_person_id", "duration_ms", "report",
            "nir_encrypted", "quarantine_path", "ingested_by"}  # fmt: skip


def _volatile(name: str) -> bool:
    return name in VOLATILE or name.endswith("_at") or (name.endswith("_id") and name != "person_id")


def _stable(value: Any) -> Any:
    """A JSON value without what differs between two runs (an episode's criteria name the facts' file ids)."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in sorted(value.items()) if not _volatile(k)}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def dump(db: Settings, tables: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    """The sorted rows of `tables`, without what legitimately differs between two runs; a `person_id` is
    replaced by who the person is (NIR hash, or names and birth date), which is the same in both runs."""
    engine = get_engine(db)
    out: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        p = Base.metadata.tables["persons"].c
        who = {
            r.id: (r.nir_hash or "", r.nom or "", r.prenom or "", str(r.date_naissance))
            for r in conn.execute(select(p.id, p.nir_hash, p.nom, p.prenom, p.date_naissance))
        }
        for name in tables:
            table = Base.metadata.tables[name]
            cols = [c for c in table.c if not _volatile(c.name)]
            rows = []
            for row in conn.execute(select(*cols)):
                values = dict(zip([c.name for c in cols], row, strict=True))
                for key in ("person_id",):
                    if key in values:
                        values[key] = who.get(values[key], ("gone", values[key]))
                rows.append(tuple(repr(_stable(values[c.name])) for c in cols))
            out[name] = sorted(rows)
    return out


def _diff(got: dict[str, list[tuple[Any, ...]]], expected: dict[str, list[tuple[Any, ...]]]) -> str:
    """The first rows that differ, per table, with their columns (to read a failure)."""
    out = []
    for name, rows in expected.items():
        if got.get(name) != rows:
            cols = [c.name for c in Base.metadata.tables[name].c if not _volatile(c.name)]
            extra = sorted(set(got.get(name, [])) - set(rows))[:2]
            missing = sorted(set(rows) - set(got.get(name, [])))[:2]
            out.append(f"{name} ({len(got.get(name, []))} rows, one run: {len(rows)}) {cols}: "
                       f"not in one run's {extra}; missing {missing}")  # fmt: skip
    return "\n".join(out)


@dataclass
class Job:
    """A job: how to build its starting state (returns the command's arguments), which tables its outcome
    is, a query that turns true once it committed a first step (the job is then killed at once: after a
    commit, before the end), and any extra check of the final state."""

    prepare: Callable[[Settings, Path], list[str]]
    tables: list[str]
    committed: str
    check: Callable[[Settings, Path], None] | None = None
    audited: Callable[[Settings, dict[str, int]], None] | None = None  # its events, given the start's counts


INGESTED = ["persons", "person_keys", "person_states", "entry_episodes", "episode_queue", "flux_files",
            "identity_matches", "ambiguous_keys"]  # fmt: skip


def _stock(tmp: Path, day: date, closed_every: int = 0) -> Path:
    """A generated monthly file of FOYERS foyers (every `closed_every`-th foyer's right closed), made once."""
    path = tmp / f"stock-{day}-{closed_every}.xml"
    if not path.exists():
        made = tmp / "made"
        made.mkdir(exist_ok=True)
        if not closed_every:
            generated = generate_single(made / "x.xml", foyers=FOYERS, day=day).path
        else:
            gen = FluxGenerator(FOYERS, day, 1, "055", msa_share=0.0)
            for f in gen.foyers[::closed_every]:
                f.etat = "6"
            generated = gen.write_file(made, gen.foyers, "M", "CAF", day, day, compress=False).path
        generated.rename(path)
    return path


def _landed(db: Settings, path: Path) -> date:
    """The day a file landed in the inbox, as the watcher reads it."""
    return datetime.fromtimestamp(path.stat().st_mtime, ZoneInfo(db.business_timezone)).date()


def _ingested(db: Settings, path: Path, day: date, refresh: bool, initial_stock: bool = True) -> None:
    options = IngestOptions(received_on=day, initial_stock=initial_stock)
    assert ingest_file(get_engine(db), db, path, options, refresh=refresh).status == "applied"


def prepare_ingest(db: Settings, tmp: Path) -> list[str]:
    day = today(db) - timedelta(days=2)
    flux = _stock(tmp, day)
    return ["flux", "ingest", str(flux), "--initial-stock", "--received-on", day.isoformat()]


def prepare_watch(db: Settings, tmp: Path) -> list[str]:
    # the watcher dates a file by its mtime, on the file system's clock: the file is made two days before that
    # clock's day, which a shifted test clock (faketime) would put after the day it lands
    probe = tmp / "clock"
    probe.touch()
    day = min(today(db), _landed(db, probe)) - timedelta(days=2)
    probe.unlink()
    inbox = tmp / "inbox"
    shutil.rmtree(inbox, ignore_errors=True)
    inbox.mkdir()
    shutil.copy(_stock(tmp, day), inbox / "stock.xml")
    return ["flux", "watch", str(inbox), "--once", "--settle", "0"]


def prepare_refresh(db: Settings, tmp: Path) -> list[str]:
    day = today(db) - timedelta(days=2)
    # not an initial stock: its persons are nouveaux entrants, with entry episodes; every one queued
    _ingested(db, _stock(tmp, day), day, refresh=False, initial_stock=False)
    return ["episodes", "refresh"]


def prepare_purge(db: Settings, tmp: Path) -> list[str]:
    day = today(db) - timedelta(days=(db.person_retention_months + 6) * 31)
    _ingested(db, _stock(tmp, day, closed_every=2), day, refresh=True)  # half the foyers closed long ago
    return ["purge"]


def prepare_rotate(db: Settings, tmp: Path) -> list[str]:
    day = today(db) - timedelta(days=2)
    _ingested(db, _stock(tmp, day), day, refresh=False)
    return ["keys", "rotate", "nir"]


NEW_KEY = f"k9:{base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()}"


def _rotated(db: Settings) -> Settings:
    """The settings with the new NIR key first, the old one after it (what an operator sets to rotate)."""
    keys = f"{NEW_KEY},{db.nir_encryption_keys.get_secret_value()}"  # type: ignore[union-attr]
    return db.model_copy(update={"nir_encryption_keys": SecretStr(keys)})


def check_inbox(_db: Settings, tmp: Path) -> None:
    """The file taken once: in `processed`, no longer in the inbox, nothing quarantined."""
    inbox = tmp / "inbox"
    assert not list(inbox.glob("*.xml")) and not list((inbox / "quarantine").iterdir())
    assert [p.name for p in (inbox / "processed").iterdir()] == ["stock.xml"]


def check_rotated(db: Settings, _tmp: Path) -> None:
    """Every NIR under the new key, and readable to the NIR its hash says."""
    protector = NirProtector(_rotated(db).encryption_keys, db.hmac_key)
    p = Base.metadata.tables["persons"].c
    with get_engine(db).connect() as conn:
        rows = conn.execute(select(p.nir_encrypted, p.nir_hash).where(p.nir_encrypted.is_not(None))).all()
    assert rows
    for encrypted, nir_hash in rows:
        assert encrypted.startswith("k9:")
        assert protector.lookup_hash(protector.decrypt(encrypted)) == nir_hash


def _events(db: Settings, action: str) -> list[dict[str, Any]]:
    r = Base.metadata.tables["access_records"].c
    with get_engine(db).connect() as conn:
        return [json.loads(d or "{}") for d in conn.execute(select(r.detail).where(r.action == action)).scalars()]


def _counts(db: Settings) -> dict[str, int]:
    """What a job's events must account for: the persons, the values under a NIR key."""
    with get_engine(db).connect() as conn:
        counts = {"persons": conn.execute(text("SELECT count(*) FROM persons")).scalar_one()}
        counts["nir_values"] = sum(
            conn.execute(
                select(func.count())
                .select_from(m.__table__)
                .where(m.__table__.c[c].is_not(None), m.__table__.c[c] != "")
            ).scalar_one()
            for m, c in NIR_ENCRYPTED
        )
    return counts


def audited_file(db: Settings, _start: dict[str, int]) -> None:
    """The file applied once, its `flux.ingest` event once (a re-run's duplicate has its own event)."""
    applied = [e for e in _events(db, "flux.ingest") if e.get("status") == "applied"]
    with get_engine(db).connect() as conn:
        file_id = conn.execute(text("SELECT id FROM flux_files WHERE status = 'applied'")).scalar_one()
    assert [e["file_id"] for e in applied] == [file_id], _events(db, "flux.ingest")


def audited_purge(db: Settings, start: dict[str, int]) -> None:
    """Every person deleted in a committed step is counted in that step's `purge.step` event."""
    gone = start["persons"] - _counts(db)["persons"]
    assert gone > 0 and sum(e.get("persons", 0) for e in _events(db, "purge.step")) == gone


def audited_rotation(db: Settings, start: dict[str, int]) -> None:
    """Every value rewritten in a committed batch is counted in that batch's `keys.rotate.nir.step` event."""
    steps = _events(db, "keys.rotate.nir.step")
    assert start["nir_values"] > 0 and sum(sum(e.values()) for e in steps) == start["nir_values"], steps


APPLIED = "SELECT count(*) FROM flux_files WHERE status = 'applied'"
JOBS = {
    "flux-ingest": Job(prepare_ingest, INGESTED, APPLIED, audited=audited_file),
    "flux-watch": Job(prepare_watch, INGESTED, APPLIED, check=check_inbox, audited=audited_file),
    "episodes-refresh": Job(prepare_refresh, ["entry_episodes", "episode_queue"],
                            "SELECT count(*) FROM entry_episodes"),
    "purge": Job(prepare_purge, [_table(m).name for m in PERSON_TABLES] + ["persons"],
                 "SELECT count(*) FROM access_records WHERE action = 'purge.step'", audited=audited_purge),
    "keys-rotate-nir": Job(prepare_rotate, ["persons", "person_keys"],
                           "SELECT count(*) FROM persons WHERE nir_encrypted LIKE 'k9:%'", check=check_rotated,
                           audited=audited_rotation),
}  # fmt: skip


def _fresh(db: Settings, tmp: Path, job: Job) -> list[str]:
    """The job's starting state, from an empty database."""
    truncate(db)
    return job.prepare(db, tmp)


def _env(db: Settings, job_name: str) -> dict[str, str]:
    if not job_name.startswith("keys"):
        return cli_env(db, NO_FAKE)
    keys = _rotated(db).nir_encryption_keys.get_secret_value()  # type: ignore[union-attr]
    return cli_env(db, NO_FAKE, PASSERELLE_NIR_ENCRYPTION_KEYS=keys)


def _run(args: list[str], env: dict[str, str]) -> tuple[int, str, float]:
    started = time.monotonic()
    proc = passerelle(*args, env=env)
    _out, err = proc.communicate(timeout=300)
    return proc.returncode, err, time.monotonic() - started


def _killed_at(db: Settings, args: list[str], env: dict[str, str], after: float | str) -> bool:
    """Start the job, SIGKILL it (its whole process group) `after` seconds later, or as soon as the query
    `after` finds a row; whether it still ran then."""
    proc = passerelle(*args, env=env)
    if isinstance(after, str):
        with get_engine(db).connect() as conn:
            while proc.poll() is None and not conn.execute(text(after)).scalar():
                conn.rollback()  # a fresh snapshot each time
                time.sleep(0.005)
    else:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=after)
    if proc.poll() is not None:
        proc.communicate()
        return False  # done before the kill
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    proc.communicate(timeout=60)
    return proc.returncode == -signal.SIGKILL


# A known defect (issue #24, found by this harness): on SQLite the audit events live in an attached file
# (`NAME-audit.db`), and with WAL a transaction over two files is atomic in each file, not across both
# (sqlite.org/lang_attach.html): a kill -9 between the two commits (main file first) keeps the step and
# loses its event. Rare (a window of a write); seen on the `flux watch` kill right after the commit. Until
# it is fixed, on SQLite such a loss makes the test xfail (the other checks still pass or fail it).
SQLITE_LOST_EVENTS: list[str] = []


@pytest.fixture(autouse=True)
def _no_loss_carried_over() -> None:
    SQLITE_LOST_EVENTS.clear()


def _known_sqlite_loss() -> None:
    if SQLITE_LOST_EVENTS:
        lost = SQLITE_LOST_EVENTS[:]
        SQLITE_LOST_EVENTS.clear()
        pytest.xfail(f"SQLite: an audit event lost across the attached journal's commit: {lost}")


def _sound(db: Settings, tmp: Path, env: dict[str, str], job: Job, start: dict[str, int]) -> None:
    """The final state checked beyond its tables; SQLite's integrity check; the job's events (one per
    committed step); the audit trail verified as the jobs left it (unsealed events checked by their
    proof), then once sealed (what the server or cron does)."""
    if job.check:
        job.check(db, tmp)
    if job.audited:
        try:
            job.audited(db, start)
        except AssertionError as exc:
            if not db.is_sqlite:
                raise
            SQLITE_LOST_EVENTS.append(str(exc)[:300])  # see below; every other check still runs
    if db.is_sqlite:
        with get_engine(db).connect() as conn:
            assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    for command in (["audit", "verify"], ["audit", "seal"], ["audit", "verify"]):
        code, err, _ = _run(command, env)
        assert code == 0, f"{command}: {err[-2000:]}"


def _no_process_left(env_marker: str) -> None:
    """No `passerelle` process of this test's database still runs (they are stopped by the harness anyway)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if b"app.cli" in cmd and env_marker.encode() in environ:
            raise AssertionError(f"process {pid} left behind: {cmd}")


@pytest.mark.parametrize("name", list(JOBS))
def test_a_job_killed_at_any_moment_ends_as_one_run_when_run_again(db, tmp_path, name):
    job = JOBS[name]
    env = _env(db, name)
    args = _fresh(db, tmp_path, job)
    start = _counts(db)
    code, err, duration = _run(args, env)
    assert code == 0, err[-2000:]
    expected = dump(db, job.tables)
    assert any(expected.values()), "the job did nothing to compare"
    _sound(db, tmp_path, env, job, start)
    hit = []
    moments: dict[str, float | str] = {m: duration * f for m, f in MOMENTS.items()} | {"first commit": job.committed}
    for moment, when in moments.items():
        args = _fresh(db, tmp_path, job)
        assert _counts(db) == start
        dispose_engines()  # no connection of this process kept open across the kill
        hit.append(_killed_at(db, args, env, when))
        dispose_engines()
        code, err, _ = _run(args, env)
        assert code == 0, f"{moment}: {err[-2000:]}"
        got = dump(db, job.tables)
        assert got == expected, f"killed {moment}: not the state of one run:\n{_diff(got, expected)}"
        try:
            _sound(db, tmp_path, env, job, start)
        except AssertionError as exc:
            raise AssertionError(f"killed {moment}: {exc}") from exc
        _no_process_left(db.database_url)
    assert any(hit), "no kill landed while the job ran"
    _known_sqlite_loss()


@pytest.mark.parametrize("name", list(JOBS))
def test_two_copies_at_once_end_as_one_run(db, tmp_path, name):
    job = JOBS[name]
    env = _env(db, name)
    args = _fresh(db, tmp_path, job)
    code, err, _ = _run(args, env)
    assert code == 0, err[-2000:]
    expected = dump(db, job.tables)
    args = _fresh(db, tmp_path, job)
    start = _counts(db)
    procs = [passerelle(*args, env=env) for _ in range(2)]
    results = [(p.communicate(timeout=300), p.returncode) for p in procs]
    codes = sorted(code for _, code in results)
    assert ExitCode.INTERNAL not in codes and codes[0] == 0, [(c, err[-1500:]) for (_, err), c in results]
    assert set(codes) <= {0, int(ExitCode.BUSY)}, [(c, err[-1500:]) for (_, err), c in results]
    assert dump(db, job.tables) == expected
    _sound(db, tmp_path, env, job, start)
    _no_process_left(db.database_url)
    _known_sqlite_loss()


@pytest.mark.parametrize("name", ["flux-ingest", "flux-watch"])
def test_the_same_file_again_finishes_what_a_run_killed_after_its_commit_left(db, tmp_path, name):
    """Killed between the file's commit and the end of the episodes' refresh (a window the moments above
    hit only sometimes): the file applied, its persons still queued (and, for the watcher, the file still in
    the inbox). The same command finds the file known and finishes the work, as one run would have."""
    job = JOBS[name]
    env = _env(db, name)
    args = _fresh(db, tmp_path, job)
    if name == "flux-ingest":  # not an initial stock: its persons are nouveaux entrants, queued once committed
        args.remove("--initial-stock")
    code, err, _ = _run(args, env)
    assert code == 0, err[-2000:]
    expected = dump(db, job.tables)
    assert expected["entry_episodes"] and not expected["episode_queue"]
    _fresh(db, tmp_path, job)
    start = _counts(db)
    path = Path(args[2]) if name == "flux-ingest" else tmp_path / "inbox" / "stock.xml"
    day = today(db) - timedelta(days=2) if name == "flux-ingest" else _landed(db, path)
    _ingested(db, path, day, refresh=False, initial_stock=False)  # the watcher: the file still in the inbox
    assert dump(db, ["episode_queue"])["episode_queue"]  # what the killed run left undone
    code, err, _ = _run(args, env)
    assert code == 0, err[-2000:]
    assert dump(db, job.tables) == expected
    _sound(db, tmp_path, env, job, start)
    _known_sqlite_loss()
