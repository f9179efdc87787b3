"""The operator's path (issue #26, item 6): an environment problem is one line and exit 3 (never a traceback),
said by what the database server answered; prod names every missing setting at once; the demo never deletes
a database a server uses; `db upgrade` never creates a mistyped directory; a département must exist."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.support.cli import run_cli
from tests.support.database import PG_ENV
from tests.support.processes import spawn, stop


def _env(tmp_path: Path, **over: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSERELLE_")}
    env.update({"PASSERELLE_ENV": "dev", "PASSERELLE_DATA_DIR": str(tmp_path / "data"), **over})
    return env


def _passerelle(env: dict[str, str], *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """The command in a process of its own, stopped (with its children) however the test ends."""
    proc = spawn(
        [sys.executable, "-m", "app", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        stop(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The command's stderr, which must be one human line: no traceback, no JSON log line."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr and not lines[0].lstrip().startswith("{"), done.stderr
    return lines[0]


def _pg_url(**parts: object) -> str:
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} not set: a PostgreSQL server is needed to hear what it answers")
    return make_url(base).set(**parts).render_as_string(hide_password=False)  # type: ignore[arg-type]


@pytest.mark.parametrize("command", [("serve", "--port", "0"), ("db", "upgrade"), ("clients", "list")])
def test_a_server_that_does_not_answer_and_a_wrong_scheme(command, tmp_path):
    port = _free_port()  # nobody listens there once the probe is closed
    refused = _passerelle(
        _env(tmp_path, PASSERELLE_DATABASE_URL=f"postgresql+psycopg://passerelle@127.0.0.1:{port}/passerelle"),
        *command,
    )
    assert refused.returncode == 3, refused.stderr
    assert "does not answer" in _one_line(refused) and "PASSERELLE_DATABASE_URL" in refused.stderr

    mysql = _passerelle(_env(tmp_path, PASSERELLE_DATABASE_URL="mysql://user@db.example/passerelle"), *command)
    assert mysql.returncode == 3, mysql.stderr  # was 4 "internal error ... please report it", with a traceback
    line = _one_line(mysql)
    assert "PASSERELLE_DATABASE_URL" in line and "'mysql' is not supported" in line and "does not answer" not in line


@pytest.mark.parametrize("command", [("serve", "--port", "0"), ("db", "upgrade"), ("clients", "list")])
def test_an_unknown_database_and_a_refused_role_are_not_silence(command, tmp_path):
    unknown_db = _passerelle(_env(tmp_path, PASSERELLE_DATABASE_URL=_pg_url(database="no_such_db_26")), *command)
    assert unknown_db.returncode == 3, unknown_db.stderr
    line = _one_line(unknown_db)
    assert "no database 'no_such_db_26'" in line and "does not answer" not in line

    no_role = _passerelle(_env(tmp_path, PASSERELLE_DATABASE_URL=_pg_url(username="no_such_role_26")), *command)
    assert no_role.returncode == 3, no_role.stderr
    line = _one_line(no_role)
    assert "refused the role 'no_such_role_26'" in line and "does not answer" not in line


def test_migrations_url_named_when_it_is_the_one_used(tmp_path):
    url = _pg_url(database="no_such_db_26")
    done = _passerelle(
        _env(
            tmp_path,
            PASSERELLE_DATABASE_URL=url,
            PASSERELLE_MIGRATION_DATABASE_URL=_pg_url(database="no_such_db_26", username="owner26"),
        ),
        "db",
        "upgrade",
    )
    assert done.returncode == 3 and "PASSERELLE_MIGRATION_DATABASE_URL" in _one_line(done), done.stderr


def test_a_port_in_use_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _passerelle(_env(tmp_path), "serve", "--port", str(port))
    assert done.returncode == 3, done.stderr
    line = _one_line(done)
    assert f"port {port} on 127.0.0.1 is already in use" in line
    assert not (tmp_path / "data" / "passerelle.db").exists(), "refused before migrating anything"


def test_prod_names_the_database_url_and_every_missing_secret_at_once(tmp_path):
    done = _passerelle(_env(tmp_path, PASSERELLE_ENV="prod"), "serve", "--port", "0")
    assert done.returncode == 3, done.stderr
    line = _one_line(done)
    for name in (
        "PASSERELLE_DATABASE_URL",
        "PASSERELLE_NIR_ENCRYPTION_KEYS",
        "PASSERELLE_NIR_HMAC_KEY",
        "PASSERELLE_API_KEY_PEPPER",
        "PASSERELLE_AUDIT_KEYS",
    ):
        assert name in line
    assert not (tmp_path / "data" / "passerelle.db").exists(), "never a SQLite file in prod by default"


def test_prod_with_its_secrets_still_needs_the_database_url(tmp_path):
    import base64
    import secrets

    from app.settings import ConfigurationError, Settings

    def key() -> str:
        return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()

    values = {"nir_encryption_keys": f"k1:{key()}", "nir_hmac_key": key(), "api_key_pepper": key(),
              "audit_keys": f"a1:{key()}"}  # fmt: skip
    with pytest.raises(ConfigurationError, match=r"^PASSERELLE_DATABASE_URL is required when PASSERELLE_ENV=prod$"):
        Settings(env="prod", data_dir=tmp_path, **values)
    given = Settings(env="prod", data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/chosen.db", **values)
    assert given.database_url == f"sqlite:///{tmp_path}/chosen.db"  # SQLite is allowed when chosen
    assert Settings(env="dev", data_dir=tmp_path).database_url.endswith("/passerelle.db")  # dev keeps its default


def test_db_upgrade_refuses_a_mistyped_directory(tmp_path):
    target = tmp_path / "srv" / "pasrelle" / "db" / "p.db"  # the mistyped directory: nothing of it exists
    env = _env(tmp_path, PASSERELLE_DATABASE_URL=f"sqlite:///{target}")
    done = _passerelle(env, "db", "upgrade")
    assert done.returncode == 3, done.stderr
    assert f"the directory {target.parent} of the SQLite database" in _one_line(done)
    assert not (tmp_path / "srv").exists(), "no directory created"
    served = _passerelle(env, "serve", "--port", str(_free_port()))  # serve migrates the same way
    assert served.returncode == 3 and "does not exist" in _one_line(served)
    assert not (tmp_path / "srv").exists()

    created = _passerelle(env, "db", "upgrade", "--create-dirs")
    assert created.returncode == 0, created.stderr
    assert target.exists()

    (tmp_path / "a-file").write_text("")
    under_a_file = _passerelle(
        _env(tmp_path, PASSERELLE_DATABASE_URL=f"sqlite:///{tmp_path}/a-file/p.db"), "db", "upgrade"
    )
    assert under_a_file.returncode == 3, under_a_file.stderr  # was 4 "internal error", a traceback in the log
    assert f"{tmp_path}/a-file/p.db: Not a directory" in _one_line(under_a_file)

    default = _passerelle(_env(tmp_path), "db", "upgrade")  # the data directory is the service's to create
    assert default.returncode == 0 and (tmp_path / "data" / "passerelle.db").exists(), default.stderr


def _serve(env: dict[str, str], port: int) -> subprocess.Popen[str]:
    proc = spawn(
        [sys.executable, "-m", "app", "serve", "--no-migrate", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as answer:
                if answer.status == 200:
                    return proc
        except OSError:
            pass
        assert proc.poll() is None, "the server stopped"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.3)


def test_the_demo_refuses_to_delete_a_database_a_server_uses(tmp_path):
    from app.db import database_in_use, dispose_engines
    from app.demo import _fresh_database
    from app.settings import Settings

    data = tmp_path / "data"
    demo_db = data / "demo" / "demo.db"
    env = _env(tmp_path, PASSERELLE_DATABASE_URL=f"sqlite:///{demo_db}")
    assert _passerelle(env, "db", "upgrade", "--create-dirs").returncode == 0
    inode = demo_db.stat().st_ino
    marker = demo_db.parent / "marker"  # gone when the demo's directory is renewed (inodes are reused)
    marker.write_text("")
    port = _free_port()
    server = _serve(env, port)
    try:
        assert database_in_use(demo_db)
        refused = _passerelle(_env(tmp_path), "demo", "--foyers", "50", "--days", "5")
        assert refused.returncode == 5, refused.stderr  # busy: nothing done, try again later
        assert "est utilisée par un serveur" in refused.stderr and "Traceback" not in refused.stderr
        assert demo_db.stat().st_ino == inode and marker.exists(), "the served file is still there, the same"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as answer:
            assert answer.status == 200
    finally:
        stop(server)
    assert not database_in_use(demo_db), "the lock ends with the server"
    root, _settings = _fresh_database(Settings(env="dev", data_dir=data))  # no server: a fresh database
    try:
        assert root == data / "demo" and demo_db.exists() and not marker.exists()
    finally:
        dispose_engines()


def test_departement_codes_of_insee(db, monkeypatch):
    from app.admin.departements import OFFICIAL_DEPARTEMENTS

    # hand-counted: 95 numbers less 020, plus 02A and 02B, plus 971 972 973 974 976
    assert len(OFFICIAL_DEPARTEMENTS) == 95 - 1 + 2 + 5
    assert {"001", "019", "021", "095", "02A", "02B", "971", "976"} <= OFFICIAL_DEPARTEMENTS
    assert not {"000", "020", "096", "975", "977", "999"} & OFFICIAL_DEPARTEMENTS

    monkeypatch.delenv("PASSERELLE_EXTRA_DEPARTEMENTS", raising=False)
    created = run_cli(db, monkeypatch, "clients", "create", "--name", "p", "--departement", "999", "--scope", "admin")
    assert created.exit_code == 2 and "999: not a département code" in created.output, created.output
    assert "PASSERELLE_EXTRA_DEPARTEMENTS" in created.output
    for code in ("020", "975"):
        added = run_cli(db, monkeypatch, "departements", "add", code)
        assert added.exit_code == 2 and f"{code}: not a département code" in added.output, added.output
    assert run_cli(db, monkeypatch, "departements", "add", "02B").exit_code == 0
    listed = run_cli(db, monkeypatch, "departements", "list", "--json")
    assert [row["code"] for row in json.loads(listed.stdout)] == ["02B"], "nothing else registered"
    assert run_cli(db, monkeypatch, "clients", "list", "--json").stdout.strip() == "[]"

    monkeypatch.setenv("PASSERELLE_EXTRA_DEPARTEMENTS", "975, 977")
    assert run_cli(db, monkeypatch, "departements", "add", "975").exit_code == 0
    extra = run_cli(db, monkeypatch, "clients", "create", "--name", "p", "--departement", "977", "--scope", "admin")
    assert extra.exit_code == 0, extra.output
    from app.settings import ConfigurationError, Settings

    with pytest.raises(ValueError, match="is not a code of 3 digits"):
        Settings(env="test", data_dir=db.data_dir, extra_departements="97X")
    monkeypatch.setenv("PASSERELLE_EXTRA_DEPARTEMENTS", "97X")
    from app.settings import get_settings

    get_settings.cache_clear()
    with pytest.raises(ConfigurationError, match="PASSERELLE_EXTRA_DEPARTEMENTS"):
        get_settings()
    get_settings.cache_clear()
