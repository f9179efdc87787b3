"""Settings: zero-setup defaults in dev; prod refuses missing or placeholder secrets, naming them."""

from __future__ import annotations

import base64
import json
import secrets

import pytest

from app.settings import ConfigurationError, Settings


def _k() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def test_dev_defaults_work_without_configuration(tmp_path):
    s = Settings(data_dir=tmp_path)
    assert s.database_url == f"sqlite:///{tmp_path.as_posix()}/passerelle.db"
    key_ids = [k for k, _ in s.encryption_keys]
    assert key_ids == ["dev1"]
    assert (tmp_path / "dev-secrets.json").stat().st_mode & 0o077 == 0, "dev secrets readable by owner only"
    # Generated once, then reused: encrypted data stays readable across restarts.
    again = Settings(data_dir=tmp_path)
    assert again.hmac_key == s.hmac_key and again.encryption_keys == s.encryption_keys


@pytest.mark.parametrize("missing", ["nir_encryption_keys", "nir_hmac_key", "api_key_pepper", "audit_keys"])
def test_prod_refuses_a_missing_secret_and_names_it(missing, tmp_path):
    values = {"nir_encryption_keys": f"k1:{_k()}", "nir_hmac_key": _k(), "api_key_pepper": _k(),
              "audit_keys": f"a1:{_k()}"}  # fmt: skip
    values.pop(missing)
    with pytest.raises(ConfigurationError, match=f"PASSERELLE_{missing.upper()}"):
        Settings(env="prod", data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/p.db", **values)


@pytest.mark.parametrize("placeholder", ["changeme", "CHANGE-ME-please", "secret", "<your key here>"])
def test_prod_refuses_placeholders(placeholder, tmp_path):
    with pytest.raises(ConfigurationError, match="PASSERELLE_NIR_HMAC_KEY"):
        Settings(
            env="prod",
            data_dir=tmp_path,
            database_url=f"sqlite:///{tmp_path}/p.db",
            nir_encryption_keys=f"k1:{_k()}",
            nir_hmac_key=placeholder,
            api_key_pepper=_k(),
            audit_keys=f"a1:{_k()}",
        )


def test_prod_refuses_short_or_malformed_keys(tmp_path):
    with pytest.raises(ConfigurationError, match="at least 32 bytes"):
        Settings(
            env="prod",
            data_dir=tmp_path,
            database_url=f"sqlite:///{tmp_path}/p.db",
            nir_encryption_keys=f"k1:{_k()}",
            nir_hmac_key="c2hvcnQ",
            api_key_pepper=_k(),
            audit_keys=f"a1:{_k()}",
        )
    with pytest.raises(ConfigurationError, match="32 bytes"):
        Settings(
            env="prod",
            data_dir=tmp_path,
            database_url=f"sqlite:///{tmp_path}/p.db",
            nir_encryption_keys="k1:c2hvcnQ",
            nir_hmac_key=_k(),
            api_key_pepper=_k(),
            audit_keys=f"a1:{_k()}",
        )


def test_prod_accepts_real_secrets(tmp_path):
    s = Settings(
        env="prod",
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path}/p.db",
        nir_encryption_keys=f"k2:{_k()},k1:{_k()}",
        nir_hmac_key=_k(),
        api_key_pepper=_k(),
        audit_keys=f"a1:{_k()}",
    )
    assert [k for k, _ in s.encryption_keys] == ["k2", "k1"]
    assert not (tmp_path / "dev-secrets.json").exists()


@pytest.mark.parametrize("name", ["audit_keys", "export_keys"])
@pytest.mark.parametrize("weak", ["changeme", "a1:c2hvcnQ", "no-key-id"])
def test_prod_refuses_weak_audit_and_export_keys_naming_them(name, weak, tmp_path):
    values = {"nir_encryption_keys": f"k1:{_k()}", "nir_hmac_key": _k(), "api_key_pepper": _k(),
              "audit_keys": f"a1:{_k()}", name: weak}  # fmt: skip
    with pytest.raises(ConfigurationError, match=f"PASSERELLE_{name.upper()}"):
        Settings(env="prod", data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/p.db", **values)


def test_secrets_from_a_directory_of_files_as_containers_mount_them(tmp_path, monkeypatch):
    """PASSERELLE_SECRETS_DIR: one file per secret, named as its variable (Docker/Kubernetes secrets)."""
    from app.settings import get_settings

    secrets_dir = tmp_path / "run-secrets"
    secrets_dir.mkdir()
    values = {"nir_encryption_keys": f"k1:{_k()}", "nir_hmac_key": _k(), "api_key_pepper": _k(),
              "audit_keys": f"a1:{_k()}"}  # fmt: skip
    for name, value in values.items():
        (secrets_dir / f"PASSERELLE_{name.upper()}").write_text(value + "\n")
    for var in [v for v in __import__("os").environ if v.startswith("PASSERELLE_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("PASSERELLE_ENV", "prod")
    monkeypatch.setenv("PASSERELLE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PASSERELLE_DATABASE_URL", f"sqlite:///{tmp_path}/p.db")
    monkeypatch.setenv("PASSERELLE_SECRETS_DIR", str(secrets_dir))
    get_settings.cache_clear()
    try:
        s = get_settings()
        assert s.hmac_key == base64.urlsafe_b64decode(values["nir_hmac_key"])
        assert [k for k, _ in s.audit_key_ring] == ["a1"]
        monkeypatch.setenv("PASSERELLE_SECRETS_DIR", str(tmp_path / "nowhere"))
        get_settings.cache_clear()
        with pytest.raises(ConfigurationError, match="PASSERELLE_SECRETS_DIR"):
            get_settings()
    finally:
        get_settings.cache_clear()


def test_cli_reports_configuration_errors(monkeypatch, tmp_path):
    import subprocess
    import sys

    env = {"PASSERELLE_ENV": "prod", "PASSERELLE_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "app", "db", "current"], env=env, capture_output=True, text=True)
    assert r.returncode == 3  # the environment (docs/operations.md, "Exit codes")
    assert "PASSERELLE_NIR_ENCRYPTION_KEYS" in r.stderr


def test_a_wrong_setting_is_named_without_a_traceback(tmp_path):
    """Out-of-range or unreadable values of the settings (here the time limits and concurrency ones added
    for issue #8): the CLI says which variable and why, exit code 3, no traceback, no value echoed."""
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "PASSERELLE_ENV": "dev",
        "PASSERELLE_DATA_DIR": str(tmp_path),
        "PASSERELLE_READY_TIMEOUT_SECONDS": "99",
        "PASSERELLE_MAX_CONCURRENT_REQUESTS": "many-7f3a",
        "PASSERELLE_REQUEST_THREADS": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "flux", "list"], env=env, capture_output=True, text=True, timeout=60
    )
    out = done.stdout + done.stderr
    assert done.returncode == 3, out
    for name in (
        "PASSERELLE_READY_TIMEOUT_SECONDS",
        "PASSERELLE_MAX_CONCURRENT_REQUESTS",
        "PASSERELLE_REQUEST_THREADS",
    ):
        assert name in out
    assert "Traceback" not in out and "many-7f3a" not in out


def test_rdv_insertion_secrets_from_json_or_a_file_and_refused_when_wrong(tmp_path):
    """PASSERELLE_RDV_INSERTION_SECRETS: a JSON object, or the path of a file holding one (a container
    secret); a wrong value is named without echoing it; prod refuses a short secret."""
    from app.settings import ConfigurationError

    direct = Settings(env="test", data_dir=tmp_path, rdv_insertion_secrets='{"055": "abc"}')
    assert direct.rdv_insertion_secret("055") == b"abc" and direct.rdv_insertion_secret("054") is None
    secret_file = tmp_path / "rdvi.json"
    secret_file.write_text('{"02A": "from-a-file"}')
    assert (
        Settings(env="test", data_dir=tmp_path, rdv_insertion_secrets=str(secret_file)).rdv_insertion_secret("02A")
        == b"from-a-file"
    )
    for wrong in ('{"055": ""}', '["x"]', "{not json", str(tmp_path / "missing.json"), '{"55": "abc"}'):
        with pytest.raises(ConfigurationError) as exc:
            Settings(env="test", data_dir=tmp_path, rdv_insertion_secrets=wrong)
        assert "PASSERELLE_RDV_INSERTION_SECRETS" in str(exc.value) and "abc" not in str(exc.value)
    strong = {"nir_encryption_keys": f"k1:{_k()}", "nir_hmac_key": _k(), "api_key_pepper": _k(),
              "audit_keys": f"a1:{_k()}"}  # fmt: skip
    with pytest.raises(ConfigurationError, match="32 characters"):
        Settings(
            env="prod",
            data_dir=tmp_path,
            database_url=f"sqlite:///{tmp_path}/p.db",
            rdv_insertion_secrets='{"055": "short"}',
            **strong,
        )
    strong_secret = json.dumps({"055": secrets.token_hex(20)})
    assert Settings(
        env="prod",
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path}/p.db",
        rdv_insertion_secrets=strong_secret,
        **strong,
    )


# -- issue #23, item 10: prod refuses weak secrets, naming the variable, never the value ------------------

_ZERO = base64.urlsafe_b64encode(bytes(32)).decode()
_ONE_BYTE = base64.urlsafe_b64encode(b"\x07").decode()
_REPEATED = base64.urlsafe_b64encode(b"\xab" * 32).decode()
_FEW = base64.urlsafe_b64encode(bytes([1, 2, 3]) * 16).decode()


def _strong() -> dict[str, str]:
    """Every secret the service knows, each set and strong."""
    return {
        "nir_encryption_keys": f"k2:{_k()},k1:{_k()}",
        "nir_hmac_key": _k(),
        "api_key_pepper": _k(),
        "audit_keys": f"a1:{_k()}",
        "export_keys": f"e1:{_k()}",
        "extract_key": _k(),
        "rdv_insertion_secrets": json.dumps({"055": secrets.token_hex(24), "054": secrets.token_hex(24)}),
        "ft_client_secret": secrets.token_hex(32),
        "oidc_client_secret": secrets.token_urlsafe(32),
        "smtp_password": secrets.token_urlsafe(16),
    }


def test_prod_accepts_a_strong_configuration_of_every_secret(tmp_path):
    s = Settings(env="prod", data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/p.db", **_strong())
    assert len(s.extract_key_bytes) == 32 and s.rdv_insertion_secret("054") is not None


def _refused(tmp_path, **overrides: str) -> str:
    values = {**_strong(), **overrides}
    with pytest.raises(ConfigurationError) as exc:
        Settings(env="prod", data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/p.db", **values)
    return str(exc.value)


_WEAK_KEYS = {
    "changeme": "changeme",
    "CHANGEME upper": "CHANGEME",
    "secret": "Secret",
    "password": "password123",
    "test": "test",
    "example": "example-key-0000000000000000000000000",
    "xxx": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "dev-secret": "dev-secret-123",
    "one byte": _ONE_BYTE,
    "all zeros": _ZERO,
    "repeated byte": _REPEATED,
    "few distinct bytes": _FEW,
}


@pytest.mark.parametrize("name", ["extract_key", "nir_hmac_key", "api_key_pepper"])
@pytest.mark.parametrize("weak", list(_WEAK_KEYS.values()), ids=list(_WEAK_KEYS))
def test_prod_refuses_each_weak_key_naming_the_variable_never_the_value(name, weak, tmp_path):
    message = _refused(tmp_path, **{name: weak})
    assert f"PASSERELLE_{name.upper()}" in message
    assert weak not in message and weak.lower() not in message.lower().replace(f"passerelle_{name}", "")


@pytest.mark.parametrize("name", ["nir_encryption_keys", "audit_keys", "export_keys"])
@pytest.mark.parametrize(
    "weak",
    ["changeme", "TEST", _ZERO, _REPEATED, _ONE_BYTE, _FEW],
    ids=["changeme", "TEST", "zeros", "repeated", "short", "few"],
)
def test_prod_refuses_weak_keys_in_a_key_ring(name, weak, tmp_path):
    message = _refused(tmp_path, **{name: f"k9:{_k()},k1:{weak}"})
    assert f"PASSERELLE_{name.upper()}" in message and weak not in message


@pytest.mark.parametrize(
    "weak",
    ["changeme-changeme-changeme-changeme", "x" * 40, "0" * 64, "my-webhook-secret-for-the-departement-055", "short"],
)
def test_prod_refuses_a_placeholder_or_weak_webhook_secret(weak, tmp_path):
    message = _refused(tmp_path, rdv_insertion_secrets=json.dumps({"055": weak}))
    assert "PASSERELLE_RDV_INSERTION_SECRETS (055)" in message and weak not in message


@pytest.mark.parametrize("name", ["ft_client_secret", "oidc_client_secret", "smtp_password"])
@pytest.mark.parametrize("weak", ["changeme", "secret", "xxxxxxxx", "TODO", "aaaaaaaaaaaaaaaaaaaa"])
def test_prod_refuses_placeholder_credentials_issued_by_others(name, weak, tmp_path):
    message = _refused(tmp_path, **{name: weak})
    assert f"PASSERELLE_{name.upper()}" in message and weak not in message


def test_prod_refuses_one_key_reused_for_two_secrets_naming_both(tmp_path):
    one = _k()
    message = _refused(tmp_path, nir_hmac_key=one, api_key_pepper=one, extract_key=one)
    assert "PASSERELLE_NIR_HMAC_KEY" in message and "PASSERELLE_API_KEY_PEPPER" in message
    assert "PASSERELLE_EXTRACT_KEY" in message and one not in message
    # the same 32 bytes as an encryption key of a ring and as a plain key; the same key under two key ids
    message = _refused(tmp_path, audit_keys=f"a1:{one}", nir_hmac_key=one)
    assert "PASSERELLE_AUDIT_KEYS" in message and "PASSERELLE_NIR_HMAC_KEY" in message and one not in message
    message = _refused(tmp_path, export_keys=f"e2:{one},e1:{one}")
    assert "PASSERELLE_EXPORT_KEYS (key 'e2')" in message and "(key 'e1')" in message
    # a webhook secret or a client secret that is one of our keys
    message = _refused(tmp_path, nir_hmac_key=one, rdv_insertion_secrets=json.dumps({"055": one}))
    assert "PASSERELLE_RDV_INSERTION_SECRETS (055)" in message and one not in message
    message = _refused(tmp_path, api_key_pepper=one, ft_client_secret=one)
    assert "PASSERELLE_FT_CLIENT_SECRET" in message and one not in message


def test_every_weakness_is_named_at_once(tmp_path):
    message = _refused(tmp_path, extract_key="changeme", audit_keys=f"a1:{_ZERO}", smtp_password="password")
    for name in ("PASSERELLE_EXTRACT_KEY", "PASSERELLE_AUDIT_KEYS", "PASSERELLE_SMTP_PASSWORD"):
        assert name in message


@pytest.mark.parametrize("env", ["dev", "test"])
def test_weak_secrets_are_not_refused_outside_prod(env, tmp_path):
    """Tests and demos set short or repeated keys on purpose; only prod refuses them."""
    one = _k()
    s = Settings(env=env, data_dir=tmp_path, extract_key=_ONE_BYTE, nir_hmac_key=one, api_key_pepper=one,
                 rdv_insertion_secrets='{"055": "changeme"}', smtp_password="test")  # fmt: skip
    assert s.extract_key_bytes == b"\x07" and s.rdv_insertion_secret("055") == b"changeme"
