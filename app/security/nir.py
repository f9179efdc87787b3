"""The NIR (French social-security number): validation, encryption at rest, keyed hash for lookup.

The NIR is a regulated identifier: it is stored encrypted (AES-256-GCM, with the key id in front of
the ciphertext so keys can rotate) and found through HMAC-SHA256 over its 13 first characters.
"""

from __future__ import annotations

import base64
import hmac
import os
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NIR_RE = re.compile(r"^[1-478][0-9]{2}(0[1-9]|1[0-2]|[2-9][0-9])(2[AB]|[0-9]{2})[0-9]{6}$")


class InvalidNir(ValueError):
    """A NIR that cannot be right (wrong length, characters or check key)."""


@dataclass(frozen=True)
class NirCheck:
    nir13: str
    key_given: bool


def _numeric(nir13: str) -> int:
    # Corsica: 2A counts as 19, 2B as 18 in the key computation (INSEE rule).
    if nir13[5:7] == "2A":
        return int(nir13[:5] + "19" + nir13[7:])
    if nir13[5:7] == "2B":
        return int(nir13[:5] + "18" + nir13[7:])
    return int(nir13)


def nir_key(nir13: str) -> int:
    return 97 - (_numeric(nir13) % 97)


def normalize_nir(raw: str) -> NirCheck:
    """Return the 13-character NIR; check the 2-digit key when it is present (15 characters)."""
    value = raw.strip().replace(" ", "").upper()
    if len(value) not in (13, 15):
        raise InvalidNir(f"a NIR has 13 or 15 characters, got {len(value)}")
    nir13 = value[:13]
    if not NIR_RE.match(nir13):
        raise InvalidNir("the NIR has characters that a NIR cannot have")
    if len(value) == 15:
        key = value[13:]
        if not key.isdigit() or int(key) != nir_key(nir13):
            raise InvalidNir("the NIR check key does not match")
        return NirCheck(nir13, True)
    return NirCheck(nir13, False)


class NirLookup:
    """The keyed hash (HMAC-SHA256) through which a NIR is found. Needs the HMAC key only."""

    def __init__(self, hmac_key: bytes) -> None:
        self._hmac = hmac.new(hmac_key, digestmod="sha256")  # copied per NIR: half the cost of hmac.digest

    def lookup_hash(self, nir13: str) -> str:
        mac = self._hmac.copy()
        mac.update(nir13.encode())
        return mac.hexdigest()


class NirProtector(NirLookup):
    """Encrypts, decrypts and hashes NIRs with the keys from the settings."""

    def __init__(self, encryption_keys: list[tuple[str, bytes]], hmac_key: bytes) -> None:
        if not encryption_keys:
            raise ValueError("at least one NIR encryption key is required")
        self._active_id, active = encryption_keys[0]
        self._active = AESGCM(active)
        self._by_id = {key_id: AESGCM(key) for key_id, key in encryption_keys}
        super().__init__(hmac_key)

    def encrypt(self, nir13: str) -> str:
        nonce = os.urandom(12)
        cipher = self._active.encrypt(nonce, nir13.encode(), self._active_id.encode())
        return f"{self._active_id}:{base64.urlsafe_b64encode(nonce + cipher).decode()}"

    def decrypt(self, token: str) -> str:
        key_id, _, b64 = token.partition(":")
        aes = self._by_id.get(key_id)
        if aes is None:
            raise KeyError(f"no NIR key with id {key_id!r} is configured")
        raw = base64.urlsafe_b64decode(b64)
        return aes.decrypt(raw[:12], raw[12:], key_id.encode()).decode()
