"""The keys that find a person again across files and partners, hashed before they are stored: organisme +
matricule + role, the demand number, and names + birth date as the key of last resort (compared without
case, accents, spaces or punctuation). The flux loader, RDV-Insertion's webhooks and users export, France
Travail's return file and the person search all derive them here, so the same person is always the same key.
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from functools import lru_cache


@lru_cache(maxsize=65536)
def normalize_name(value: str | None) -> str:
    """Names compared without case, accents, spaces or punctuation (identity key of last resort)."""
    if not value:
        return ""
    decomposed = unicodedata.normalize("NFKD", value.upper())
    return "".join(c for c in decomposed if c.isalnum())


@lru_cache(maxsize=8)
def identity_secret(hmac_key: bytes) -> bytes:
    """The key of the identity-key MAC, derived from the HMAC key (one secret to configure and rotate)."""
    return hmac.digest(hmac_key, b"passerelle-rsa identity keys v1", "sha256")


def keyed_mac(secret: bytes, raw: str) -> str:
    return hashlib.blake2b(raw.encode(), key=secret, digest_size=16).hexdigest()


def key_hash(hmac_key: bytes, raw: str) -> str:
    """The stored form of a matricule, demand-number or identity key: 128 bits of keyed BLAKE2b (RFC 7693's
    MAC mode; 2.5 × cheaper than HMAC-SHA256 here, and these are not NIRs). The NIR key is the NIR's own
    HMAC-SHA256 lookup hash."""
    return keyed_mac(identity_secret(hmac_key), raw)


def identity_key_text(nom: str, prenom: str, born_iso: str) -> str:
    """names + birth date, as hashed into the `identity` key (compared without case, accents or spaces)."""
    return f"id|{normalize_name(nom)}|{normalize_name(prenom)}|{born_iso}"


def matricule_key_text(fonorg: str | None, numorg: str | None, matricule: str, role: str) -> str:
    """organisme + matricule + role, as hashed into the `matricule` key (also used to search by it)."""
    return f"mat|{fonorg}|{numorg}|{matricule}|{role}"
