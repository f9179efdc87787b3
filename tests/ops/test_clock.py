"""The one clock: `app.clock.today(settings)`, fixed by PASSERELLE_TODAY for tests and demos, never in prod."""

from __future__ import annotations

import base64
import secrets
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from app.clock import today
from app.settings import ConfigurationError, Settings
from tests.support.clock import on_day


def test_unset_it_is_today_in_the_business_timezone(tmp_path):
    settings = Settings(env="test", data_dir=tmp_path, business_timezone="Pacific/Kiritimati")
    # UTC+14: ahead of UTC's date for 14 hours a day; equal to what the zone says, whatever the machine's
    assert today(settings) == datetime.now(ZoneInfo("Pacific/Kiritimati")).date()


def test_fixed_it_is_the_date_given_whatever_the_machine_says(tmp_path, monkeypatch):
    monkeypatch.setenv("PASSERELLE_TODAY", "2028-02-29")
    settings = Settings(env="test", data_dir=tmp_path)
    assert today(settings) == date(2028, 2, 29)


def test_prod_refuses_a_fixed_date(tmp_path):
    def key() -> str:
        return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()

    secrets_ = {"nir_encryption_keys": f"k1:{key()}", "nir_hmac_key": key(), "api_key_pepper": key(),
                "audit_keys": f"a1:{key()}"}  # fmt: skip
    assert (
        Settings(env="prod", data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/p.db", **secrets_).today is None
    )  # the same, unfixed, starts
    with pytest.raises(ConfigurationError, match="PASSERELLE_TODAY"):
        Settings(
            env="prod",
            data_dir=tmp_path,
            database_url=f"sqlite:///{tmp_path}/p.db",
            today=date(2026, 12, 6),
            **secrets_,
        )


def test_a_fixed_date_is_the_reception_date_of_an_upload_without_one(db, make_api_key, tmp_path):
    """The service takes its today from its settings (no process-wide fallback): a file uploaded without a
    reception date is received on the settings' day."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from tests.support.fluxbuilder import foyer, person, write_flux
    from tests.support.helpers import upload_flux

    fixed = date(2024, 3, 4)
    key = make_api_key(["flux:write"])
    path = write_flux(tmp_path, [foyer(person())], type_flux="M", day=date(2024, 3, 1))
    with TestClient(create_app(on_day(db, fixed)), raise_server_exceptions=False) as c:
        r = upload_flux(c, key, path, initial_stock="true")
    assert r.status_code == 201, r.text
    assert r.json()["received_on"] == fixed.isoformat()


def test_the_generator_never_dates_a_reception_after_its_last_day(tmp_path):
    """A population ending yesterday is all received by yesterday: files created on its last days are
    sometimes received late, but not in the future (on a Sunday, the Friday's file +3 days was tomorrow)."""
    from app.flux.generator import generate

    for start in (date(2026, 11, 6), date(2026, 11, 7), date(2028, 1, 30)):  # last days: Sun, Mon, Tue
        files = generate(tmp_path / start.isoformat(), 60, 30, start, seed=11)
        last = start + timedelta(days=30)
        assert max(f.received_on for f in files) <= last
        assert any(f.received_on > f.created_on for f in files), "some files still arrive late"


@pytest.mark.parametrize("value", ["2026-13-01", "demain", "0", "1700000000", "2026-12-06T10:00"])
def test_a_wrong_fixed_date_is_refused_naming_the_variable(tmp_path, monkeypatch, value):
    from app.settings import get_settings

    monkeypatch.setenv("PASSERELLE_TODAY", value)
    monkeypatch.setenv("PASSERELLE_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        with pytest.raises(ConfigurationError, match="PASSERELLE_TODAY") as refused:
            get_settings()
        assert f"{value!r}" not in str(refused.value)  # a setting's value is never echoed (it may be a secret)
    finally:
        get_settings.cache_clear()
