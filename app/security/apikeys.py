"""API keys for machine clients: generated once, stored as a keyed hash, looked up by their prefix.

Keys carry 256 bits of randomness, so a keyed HMAC-SHA256 (pepper from the settings) is enough:
a slow password hash would only add latency to every call. See docs/decisions.md.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

KEY_PATTERN = re.compile(r"^prsa_([A-Za-z0-9]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class GeneratedKey:
    key: str
    prefix: str


def generate_key() -> GeneratedKey:
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return GeneratedKey(key=f"prsa_{prefix}_{secret}", prefix=prefix)


def hash_key(key: str, pepper: bytes) -> str:
    return hmac.new(pepper, key.encode(), hashlib.sha256).hexdigest()


def split_key(key: str) -> str | None:
    """The prefix of a well-formed key, or None."""
    match = KEY_PATTERN.match(key)
    return match.group(1) if match else None


def verify_key(key: str, stored_hash: str, pepper: bytes) -> bool:
    return hmac.compare_digest(hash_key(key, pepper), stored_hash)
