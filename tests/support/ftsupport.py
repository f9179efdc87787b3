"""What the France Travail tests share: a département ingested from a generated flux whose persons the
platform works on, sorted by who they are at the fake France Travail; settings pointing at the fake."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.clock import today
from app.db import get_engine, session_scope
from app.flux.generator import generate
from app.flux.loader import IngestOptions, ingest_file
from app.france_travail.fake import FakeState, pointed_at, running_fake
from app.models import Person
from app.orientation.episodes import refresh_pending
from app.orientation.service import EventIn, record_event
from app.security.nir import NirProtector
from app.settings import Settings
from tests.support.clock import child_environ
from tests.support.processes import spawn

FAKE_SEED = 3
AGENT_HEADERS = {"X-Agent-Identifiant": "A123", "X-Agent-Nom": "MARTIN", "X-Agent-Prenom": "Claire"}


def ft_settings(db: Settings, fake: str, **over: Any) -> Settings:
    quick = {
        "ft_backoff_seconds": 0.01,
        "ft_retry_after_cap_seconds": 1.0,
        "ft_rate_per_second": 0.0,
        "ft_circuit_cooldown_seconds": 1.0,
    }
    return pointed_at(db, fake, **(quick | over))  # type: ignore[no-any-return]


def faults(fake: str, **values: Any) -> None:
    defaults = {
        "rate_429": 0,
        "rate_503": 0,
        "rate_500": 0,
        "rate_r999": 0,
        "rate_malformed": 0,
        "rate_reset": 0,
        "latency_ms": 0,
        "latency_jitter_ms": 0,
        "jeton_ttl_seconds": 86400,
        "retry_after": 1,
        "error_persons_percent": 0,
        "token_latency_ms": 0,
        "token_expires_in": 1499,
        "refused_scopes": [],
    }
    httpx.post(f"{fake}/_fake/faults", json=defaults | values, timeout=5).raise_for_status()


def fake_stats(fake: str, reset: bool = False) -> dict[str, Any]:
    if reset:
        return httpx.post(f"{fake}/_fake/reset", timeout=5).json()  # type: ignore[no-any-return]
    return httpx.get(f"{fake}/_fake/stats", timeout=5).json()  # type: ignore[no-any-return]


def population(
    db: Settings, tmp_path: Path, foyers: int = 60, days: int = 4, held: list[tuple[Path, IngestOptions]] | None = None
) -> dict[str, list[int]]:
    """Ingest a generated flux; every person gets an invitation (the platform works on them); returns the
    person ids by what the fake France Travail (seed 3) makes of their NIR, plus `no_nir`. With `held`, the
    last two files are not ingested but put there (to ingest while something else runs)."""
    out = tmp_path / "flux"
    start = today(db) - timedelta(days=days + 2)
    generate(out, foyers, days, start, seed=11)
    engine = get_engine(db)
    manifest = json.loads((out / "manifest.json").read_text())
    for n, entry in enumerate(manifest):
        options = IngestOptions(
            received_on=date.fromisoformat(entry["received_on"]), initial_stock=entry["initial_stock"]
        )
        if held is not None and n >= len(manifest) - 2:
            held.append((out / entry["file"], options))
            continue
        assert ingest_file(engine, db, out / entry["file"], options, refresh=False).status == "applied"
    refresh_pending(engine)
    protector = NirProtector(db.encryption_keys, db.hmac_key)
    state = FakeState(seed=FAKE_SEED)
    kinds: dict[str, list[int]] = {}
    with session_scope(db, write=True) as session:
        for p in session.scalars(select(Person).order_by(Person.id)):
            record_event(
                session,
                db,
                p,
                EventIn(type="invitation", date=p.first_received_on, external_id=f"inv-{p.id}"),
                recorded_by="test",
            )
            kind = state.kind(protector.decrypt(p.nir_encrypted)) if p.nir_encrypted and p.date_naissance else "no_nir"
            kinds.setdefault(kind, []).append(p.id)
    return kinds


def cli_env(db: Settings, fake: str, **extra: str) -> dict[str, str]:
    """The environment for `passerelle` run as a separate process on the test database and the fake."""
    env = {
        **child_environ(db),
        "PASSERELLE_ENV": "test",
        "PASSERELLE_DATA_DIR": str(db.data_dir),
        "PASSERELLE_DATABASE_URL": db.database_url,
        "PASSERELLE_NIR_ENCRYPTION_KEYS": db.nir_encryption_keys.get_secret_value(),  # type: ignore[union-attr]
        "PASSERELLE_NIR_HMAC_KEY": db.nir_hmac_key.get_secret_value(),  # type: ignore[union-attr]
        "PASSERELLE_API_KEY_PEPPER": db.api_key_pepper.get_secret_value(),  # type: ignore[union-attr]
        "PASSERELLE_LOG_LEVEL": "WARNING",
        "PASSERELLE_FT_AUTH_URL": fake,
        "PASSERELLE_FT_API_URL": f"{fake}/partenaire",
        "PASSERELLE_FT_CLIENT_ID": "passerelle-fake",
        "PASSERELLE_FT_CLIENT_SECRET": "fake-secret",
        "PASSERELLE_FT_BACKOFF_SECONDS": "0.01",
        "PASSERELLE_FT_RETRY_AFTER_CAP_SECONDS": "1",
        "PASSERELLE_FT_CIRCUIT_COOLDOWN_SECONDS": "1",
    }
    return env | extra


def passerelle(*args: str, env: dict[str, str], **kw: Any) -> subprocess.Popen[str]:
    """`passerelle ARGS` as a separate process, stopped when the test ends if it still runs."""
    return spawn(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


@pytest.fixture(scope="module")
def fake() -> Iterator[str]:
    """The fake France Travail as a separate process (seed 3), for the tests of a module."""
    with running_fake(seed=FAKE_SEED) as base:
        yield base
