"""What `passerelle flux ingest` imports (issue #27 item 2: a daily file in 2 s, of which ~1 s was the
interpreter and imports). The operator's nightly command never serves HTTP, calls France Travail or runs a
migration: the server, the HTTP clients, the token libraries and alembic stay out of it (each is imported by
the function that uses it). Run in a fresh interpreter, as cron starts it, on the test database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date

from tests.support.fluxbuilder import foyer, write_flux

# Heavy packages the ingestion has no use for (the API app, HTTP clients, OIDC/JWT, Redis, migrations).
NOT_FOR_INGEST = ("fastapi", "starlette", "uvicorn", "httpx", "authlib", "joserfc", "redis", "alembic", "mako")

PROBE = """
import atexit, json, runpy, sys
atexit.register(lambda: print("MODULES " + json.dumps(sorted(m for m in sys.modules if "." not in m)), file=sys.stderr))
sys.argv = ["passerelle", *json.loads(sys.argv[1])]
runpy.run_module("app", run_name="__main__")
"""


def _env(settings) -> dict[str, str]:
    env = {**os.environ, "PASSERELLE_ENV": "test", "PASSERELLE_LOG_LEVEL": "WARNING"}
    for name in ("database_url", "data_dir", "nir_encryption_keys", "nir_hmac_key", "api_key_pepper"):
        value = getattr(settings, name)
        value = value.get_secret_value() if hasattr(value, "get_secret_value") else value
        env[f"PASSERELLE_{name.upper()}"] = str(value)
    return env


def _modules_of(settings, *args: object) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps([str(a) for a in args])],
        env=_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("MODULES ")]
    return done, set(json.loads(line.removeprefix("MODULES ")))


def test_flux_ingest_imports_no_server_client_or_migration_library(db, tmp_path):
    stock = write_flux(tmp_path, [foyer()], type_flux="M")
    done, modules = _modules_of(db, "flux", "ingest", stock, "--received-on", "2024-03-01", "--initial-stock", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["status"] == "applied"
    daily = write_flux(tmp_path, [foyer(etat="5", closure=("RFD", date(2024, 3, 3)))], day=date(2024, 3, 4))
    done, modules = _modules_of(db, "flux", "ingest", daily, "--received-on", "2024-03-04", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["status"] == "applied"
    assert "sqlalchemy" in modules and "lxml" in modules  # the probe saw the real run
    assert sorted(modules & set(NOT_FOR_INGEST)) == []


def test_flux_ingest_help_imports_none_of_them_either(db):
    done, modules = _modules_of(db, "flux", "ingest", "--help")
    assert done.returncode == 0 and "--initial-stock" in done.stdout, done.stderr
    assert sorted(modules & set(NOT_FOR_INGEST)) == []
