"""The nightly operator's CLI (issue #10): one table of exit codes for every command family, one line and
nothing created when the database is not there or not migrated, tables readable at 80 columns, no library
noise, `--json` where a table is printed. On SQLite and PostgreSQL (the `Database` helper)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date

import pytest

from app import migrate as migrations
from app.db import dispose_engines
from tests.support.cli import cli_environment, run_cli
from tests.support.database import Database, make_settings
from tests.support.faults import READS_THE_EPISODE_QUEUE, failing_statements
from tests.support.fluxbuilder import foyer, write_flux

# every command that needs the database, with arguments valid enough to reach it
NEEDS_DATABASE = [
    ("departements", "list"),
    ("departements", "add", "055"),
    ("clients", "create", "--name", "plateforme", "--departement", "055", "--scope", "persons:read"),
    ("clients", "list"),
    ("clients", "revoke", "plateforme"),
    ("flux", "list"),
    ("flux", "show", "1"),
    ("episodes", "refresh"),
    ("pilotage", "orientation", "--from", "2024-01-01", "--to", "2024-01-31"),
    ("persons", "identity-matches"),
    ("persons", "split", "1", "--reason", "homonymes"),
]


def test_a_missing_sqlite_database_is_one_line_exit_3_and_nothing_created(monkeypatch, tmp_path):
    settings = make_settings(f"sqlite:///{tmp_path / 'data' / 'passerelle.db'}", tmp_path / "data")
    for args in NEEDS_DATABASE:
        r = run_cli(settings, monkeypatch, *args)
        assert r.exit_code == 3, (args, r.output)
        assert "passerelle db upgrade" in r.output and "Traceback" not in r.output
        assert len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "data" / "passerelle.db").exists()
    assert not (tmp_path / "data" / "passerelle-audit.db").exists()
    flux = write_flux(tmp_path, [foyer()])
    r = run_cli(settings, monkeypatch, "flux", "ingest", flux)
    assert r.exit_code == 3 and "passerelle db upgrade" in r.output  # not 1, "file rejected"
    assert not (tmp_path / "data" / "passerelle.db").exists()


def test_a_database_behind_head_is_exit_3_naming_its_revision(monkeypatch, tmp_path):
    database = Database(tmp_path, "behind")
    try:
        settings = make_settings(database.url, tmp_path)
        migrations.upgrade(settings, "0007")
        for args in NEEDS_DATABASE[:2] + NEEDS_DATABASE[5:6]:
            r = run_cli(settings, monkeypatch, *args)
            assert r.exit_code == 3 and "at 0007" in r.output and "passerelle db upgrade" in r.output, r.output
        r = run_cli(settings, monkeypatch, "db", "current", "--json")
        assert r.exit_code == 3 and json.loads(r.stdout)["at_head"] is False
        assert run_cli(settings, monkeypatch, "db", "upgrade").exit_code == 0
        r = run_cli(settings, monkeypatch, "db", "current", "--json")
        assert r.exit_code == 0 and json.loads(r.stdout)["at_head"] is True
        assert run_cli(settings, monkeypatch, "departements", "list", "--json").exit_code == 0
    finally:
        dispose_engines()
        database.drop()


def test_exit_codes_of_each_family(db, monkeypatch, tmp_path):
    """0 done, 1 input rejected, 2 usage, for flux, clients, orientations, pilotage, episodes, db."""
    cases = [
        (0, ("departements", "add", "055")),
        (2, ("departements", "add", "55")),
        (0, ("clients", "create", "--name", "p", "--departement", "055", "--scope", "persons:read")),
        (2, ("clients", "create", "--name", "p", "--departement", "055", "--scope", "persons:read")),
        (2, ("clients", "revoke", "nobody")),
        (0, ("clients", "list", "--json")),
        (2, ("flux", "show", "99999999")),
        (2, ("flux", "ingest", tmp_path / "missing.xml")),
        (2, ("flux", "watch", tmp_path / "no-inbox", "--once")),
        (2, ("pilotage", "orientation", "--from", "2024-02-01", "--to", "2024-01-01")),
        (2, ("pilotage", "orientation", "--from", "x", "--to", "2024-01-01")),
        (0, ("pilotage", "orientation", "--from", "2024-01-01", "--to", "2024-01-31", "--format", "json")),
        (0, ("episodes", "refresh", "--json")),
        (2, ("flux", "nonsense")),
    ]
    for expected, args in cases:
        r = run_cli(db, monkeypatch, *args)
        assert r.exit_code == expected, (args, r.output)
        assert "Traceback" not in r.output
    assert not (tmp_path / "no-inbox").exists(), "a mistyped inbox is not created"
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("foo;bar\n1;2\n", encoding="utf-8")
    assert run_cli(db, monkeypatch, "orientations", "import", bad_csv).exit_code == 1
    broken = tmp_path / "broken.xml"
    broken.write_text("<Racine>", encoding="utf-8")
    assert run_cli(db, monkeypatch, "flux", "ingest", broken).exit_code == 1


def test_an_internal_error_is_one_line_exit_4_and_logged(db, monkeypatch, capsys):
    """What escapes every handler is a bug: one line on the terminal, the traceback in the JSON log."""
    from app import cli
    from app.settings import get_settings

    cli_environment(db, monkeypatch)

    monkeypatch.setattr(sys, "argv", ["passerelle", "episodes", "refresh"])
    try:
        a_bug = failing_statements(READS_THE_EPISODE_QUEUE, lambda _statement: RuntimeError("a bug"))
        with a_bug as failed, pytest.raises(SystemExit) as exit_info:
            cli.main()
    finally:
        get_settings.cache_clear()
    assert failed, "the bug was met"
    assert exit_info.value.code == 4
    err = capsys.readouterr().err
    assert "internal error: RuntimeError" in err
    logged = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(e.get("event") == "internal_error" and "Traceback" in e.get("exception", "") for e in logged)


def test_tables_fit_80_columns_and_never_truncate_an_identifier(db, monkeypatch, tmp_path):
    long_name = "CAF_551_I_20240301_quotidien_flux_beneficiaires_departement_meuse.xml"
    path = write_flux(tmp_path, [foyer()], name=long_name)
    r = run_cli(db, monkeypatch, "flux", "ingest", path, "--received-on", "2024-03-01")
    assert r.exit_code == 0, r.output
    for out in (r.stdout, run_cli(db, monkeypatch, "flux", "list").stdout):
        assert "…" not in out
        assert long_name in out and "applied" in out
        assert max(len(line) for line in out.splitlines()) <= 80 or long_name in max(out.splitlines(), key=len)
    clients = run_cli(
        db,
        monkeypatch,
        "clients",
        "create",
        "--name",
        "plateforme-orientation-meuse-2026",
        "--departement",
        "055",
        "--scope",
        "persons:read",
        "--scope",
        "orientation:write",
    )
    assert clients.exit_code == 0
    listed = run_cli(db, monkeypatch, "clients", "list").stdout
    assert "…" not in listed and "plateforme-orientation-meuse-2026" in listed and "orientation:write" in listed


def test_flux_show_gives_the_file_id_and_generate_says_what_it_wrote(db, monkeypatch, tmp_path):
    broken = tmp_path / "broken.xml"
    broken.write_text("<Racine>", encoding="utf-8")
    ingested = run_cli(db, monkeypatch, "flux", "ingest", broken, "--json")
    assert ingested.exit_code == 1
    (report,) = json.loads(ingested.stdout)
    shown = json.loads(run_cli(db, monkeypatch, "flux", "show", report["file_id"]).stdout)
    assert (shown["file_id"], shown["status"]) == (report["file_id"], "rejected")
    r = run_cli(db, monkeypatch, "flux", "generate", "--out", tmp_path / "gen", "--foyers", "60", "--days", "8")
    assert r.exit_code == 0
    assert "initial stock" in r.stdout and "daily files" in r.stdout and "--initial-stock" in r.stdout


def test_no_library_noise_at_the_default_level(tmp_path):
    """`db upgrade` on a new database printed 7 lines of alembic plugin set-up, then its migrations."""
    env = {**os.environ, "PASSERELLE_ENV": "dev", "PASSERELLE_DATA_DIR": str(tmp_path)}
    env.pop("PASSERELLE_DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "app", "db", "upgrade"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "alembic" not in done.stderr and "setup plugin" not in done.stderr, done.stderr
    assert done.stdout.strip().startswith("database at")


def test_watch_json_lines(db, monkeypatch, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write_flux(inbox, [foyer()], day=date(2024, 3, 1))
    r = run_cli(db, monkeypatch, "flux", "watch", inbox, "--once", "--json", "--settle", "0")
    assert r.exit_code == 0, r.output
    (line,) = [json.loads(x) for x in r.stdout.splitlines()]
    assert line["status"] == "applied" and isinstance(line["file_id"], int)
