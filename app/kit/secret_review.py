"""The prod review of the secrets (issue #23, item 10), on their values only: app.settings gathers them, asks
here, and raises its ConfigurationError with the problems found. Every problem is named by its variable, never
by its value. Refused: a placeholder left from a template; key material under 32 bytes (decoded from
base64url), all zeros, one repeated byte or too few distinct bytes; the same material under two names (or two
key ids). The credentials other parties issue (France Travail's and the identity provider's client secrets,
the SMTP password) keep their issuer's length, but a placeholder, one repeated character or one of our own keys
is refused there too.

Also here, as app.settings decodes keys with them: `b64key` and `ed25519_seed`."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

# A secret containing one of these, or equal to one of the words below, is a placeholder left in a template.
PLACEHOLDER_MARKERS = ("changeme", "change-me", "change_me", "placeholder", "replace-me", "<")
PLACEHOLDER_WORDS = ("secret", "todo", "xxx", "test", "dev", "password", "none", "null")

# A secret made only of these words (and digits or separators) is a placeholder too: `test-123`, `dev_secret`.
_PLACEHOLDER_ONLY = re.compile(
    r"(?:change|me|secret|password|passwd|test|example|sample|dummy|default|todo|fixme|dev|prod|key|my|your|here"
    r"|none|null|foo|bar|admin|x+)+"
)

# The settings' field names of the secrets reviewed, by kind (their variable: PASSERELLE_ + the name in capitals)
REQUIRED_IN_PROD = ("nir_encryption_keys", "nir_hmac_key", "api_key_pepper", "audit_keys")
OUR_KEY_RINGS = ("nir_encryption_keys", "audit_keys", "export_keys")  # `key_id:base64url[,older...]`
OUR_SINGLE_KEYS = ("nir_hmac_key", "api_key_pepper", "extract_key")  # base64url
ISSUED_CREDENTIALS = ("ft_client_secret", "oidc_client_secret", "smtp_password")
AUDIT_SIGNING_KEY = "audit_signing_key"
REVIEWED = tuple(
    dict.fromkeys((*REQUIRED_IN_PROD, *OUR_KEY_RINGS, *OUR_SINGLE_KEYS, AUDIT_SIGNING_KEY, *ISSUED_CREDENTIALS))
)


def b64key(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def ed25519_seed(value: str) -> bytes:
    """An Ed25519 private key's 32 bytes, from PEM (PKCS#8) or base64url; ValueError otherwise."""
    text = value.strip()
    if text.startswith("-----BEGIN"):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = serialization.load_pem_private_key(text.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("not an Ed25519 private key")
        return key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
    seed = b64key(text)
    if len(seed) != 32:
        raise ValueError("an Ed25519 private key is 32 bytes")
    return seed


def looks_like_placeholder(text: str) -> bool:
    """A value left from a template or typed for a try (case-insensitive). The markers and words are long
    enough, or the whole value must be made of them, so that a random base64url key is never taken for one."""
    lowered = text.strip().lower()
    if any(marker in lowered for marker in PLACEHOLDER_MARKERS) or lowered in PLACEHOLDER_WORDS:
        return True
    if any(word in lowered for word in ("example", "password", "secret")):
        return True
    letters = re.sub(r"[^a-z]", "", lowered)
    return not letters or _PLACEHOLDER_ONLY.fullmatch(letters) is not None


def _as_text(secret: str) -> bytes:
    """A secret as written, to find one written twice (a base64url key's padding aside)."""
    return secret.strip().rstrip("=").encode()


def key_weakness(key: bytes) -> str | None:
    """Why this key material is too weak for a prod secret (None: it is not), without saying its value."""
    if len(key) < 32:
        return "must be at least 32 bytes of key material (base64url)"
    if not any(key):
        return "is all zeros"
    if len(set(key)) == 1:
        return "is one repeated byte"
    if len(set(key)) < 8:
        return "has too few distinct bytes to be random"
    return None


def _env_name(name: str) -> str:
    return f"PASSERELLE_{name.upper()}"


def _given(values: Mapping[str, str], name: str) -> str | None:
    """The value of a secret set to more than blanks (None: not set)."""
    value = values.get(name)
    return value if value is not None and value.strip() else None


def missing_in_prod(values: Mapping[str, str]) -> list[str]:
    """The variables of the secrets prod requires and `values` (field name: value as given) lacks."""
    return [_env_name(name) for name in REQUIRED_IN_PROD if _given(values, name) is None]


@dataclass
class _Review:
    problems: list[str] = field(default_factory=list)
    # (where, material): each secret's key material, compared with every other's at the end
    materials: list[tuple[str, bytes]] = field(default_factory=list)


def _check_key(review: _Review, where: str, text: str) -> None:
    """A key of ours: base64url of at least 32 random bytes."""
    if looks_like_placeholder(text):
        review.problems.append(f"{where} looks like a placeholder; generate a real key")
        return
    try:
        key = b64key(text.strip())
    except ValueError:
        review.problems.append(f"{where} is not base64url")
        return
    weakness = key_weakness(key)
    if weakness:
        review.problems.append(f"{where} {weakness}")
    review.materials.append((where, key))
    review.materials.append((where, _as_text(text)))


def _review_key_ring(review: _Review, env_name: str, raw: str) -> None:
    """A ring of our keys, `key_id:base64url` separated by commas: each key exactly 32 bytes."""
    problems, materials = review.problems, review.materials
    if looks_like_placeholder(raw):
        problems.append(f"{env_name} looks like a placeholder; generate a real key")
        return
    parts = [part.strip() for part in raw.split(",") if part.strip()]
    if not parts:
        problems.append(f"{env_name} is empty")
    for part in parts:
        key_id, sep, b64 = part.partition(":")
        if not sep or not key_id:
            problems.append(f"{env_name}: each key is `key_id:base64url`")
            continue
        where = f"{env_name} (key {key_id!r})"
        _check_key(review, where, b64)
        if materials and materials[-2][0] == where and len(materials[-2][1]) > 32:
            problems.append(f"{where} must be 32 bytes")


def _review_our_keys(review: _Review, values: Mapping[str, str]) -> None:
    """The key rings, then the single keys; a ring not set is skipped (export_keys is required only to publish
    exports: export_key_ring says so then), as is a single key."""
    for name in OUR_KEY_RINGS:
        raw = _given(values, name)
        if raw is not None:
            _review_key_ring(review, _env_name(name), raw)
    for name in OUR_SINGLE_KEYS:
        text = _given(values, name)
        if text is not None:
            _check_key(review, _env_name(name), text)


def _review_audit_signing_key(review: _Review, given: str | None, publishes_checkpoints: bool) -> None:
    """The checkpoints' Ed25519 key (PEM or base64url of 32 bytes): required if checkpoints are published."""
    signing = given.strip() if given else ""
    if signing and looks_like_placeholder(signing):
        review.problems.append("PASSERELLE_AUDIT_SIGNING_KEY looks like a placeholder; run `passerelle audit keygen`")
    elif signing:
        try:
            seed = ed25519_seed(signing)
        except ValueError:
            review.problems.append(
                "PASSERELLE_AUDIT_SIGNING_KEY is neither an Ed25519 PEM key nor base64url of 32 bytes"
            )
        else:
            _check_key(review, "PASSERELLE_AUDIT_SIGNING_KEY", base64.urlsafe_b64encode(seed).decode())
    elif publishes_checkpoints:
        review.problems.append("PASSERELLE_AUDIT_SIGNING_KEY is required to publish audit checkpoints in prod")


def _review_rdv_insertion_secrets(review: _Review, secrets: Mapping[str, str]) -> None:
    """The webhook secrets of RDV-Insertion, per département: at least 32 characters, not weak."""
    for departement, secret in sorted(secrets.items()):
        where = f"PASSERELLE_RDV_INSERTION_SECRETS ({departement})"
        if looks_like_placeholder(secret):
            review.problems.append(f"{where} looks like a placeholder; generate a real key")
            continue
        material = secret.encode()
        if len(material) < 32:
            review.problems.append(f"{where}: each secret must have at least 32 characters in prod")
        elif weakness := key_weakness(material):
            review.problems.append(f"{where} {weakness}")
        review.materials.extend([(where, material), (where, _as_text(secret))])


def _review_issued_credentials(review: _Review, values: Mapping[str, str]) -> None:
    """The credentials other parties issue keep their issuer's length: only a placeholder or one repeated
    character is refused (a value of blanks only is reviewed, as a placeholder)."""
    for name in ISSUED_CREDENTIALS:
        text = values.get(name)
        if not text:
            continue
        where = _env_name(name)
        if looks_like_placeholder(text):
            review.problems.append(f"{where} looks like a placeholder; set the one issued to the service")
        elif len(set(text)) == 1:
            review.problems.append(f"{where} is one repeated character")
        review.materials.extend([(where, text.encode()), (where, _as_text(text))])


def _reused_material(materials: list[tuple[str, bytes]]) -> list[str]:
    """Every pair of secrets holding the same material, once, in the order found."""
    seen: dict[bytes, str] = {}
    reused: list[str] = []
    for where, material in materials:
        first = seen.setdefault(material, where)
        if first != where and f"{first} and {where}" not in reused:
            reused.append(f"{first} and {where}")
    return [f"{pair} hold the same key material; give each secret its own" for pair in reused]


def review_secrets(
    values: Mapping[str, str], rdv_insertion_secrets: Mapping[str, str], *, publishes_checkpoints: bool
) -> list[str]:
    """The problems of the prod secrets, in this order: our keys (rings, then single keys), the audit signing
    key, RDV-Insertion's secrets, the credentials other parties issue, then the material held twice.
    `values`: field name (REVIEWED) to value as given, for those set."""
    review = _Review()
    _review_our_keys(review, values)
    _review_audit_signing_key(review, values.get(AUDIT_SIGNING_KEY), publishes_checkpoints)
    _review_rdv_insertion_secrets(review, rdv_insertion_secrets)
    _review_issued_credentials(review, values)
    return [*review.problems, *_reused_material(review.materials)]
