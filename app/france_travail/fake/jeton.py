"""The ft-jeton-usager the fake hands out: base64 JSON carrying the NIR and an expiry, as the real one's."""

from __future__ import annotations

import base64
import json
import time
import uuid


def make_jeton(nir13: str, ttl: int) -> str:
    """A jeton for `nir13`, valid `ttl` seconds."""
    data = {
        "vers": "1",
        "uuid": str(uuid.uuid4()),
        "expire": int((time.time() + ttl) * 1000),
        "type": "USAGER",
        "data": f"{uuid.uuid4()}#{base64.b64encode(nir13.encode()).decode()}",
    }
    return base64.b64encode(json.dumps(data).encode()).decode()


def read_jeton(value: str) -> tuple[str, int] | None:
    """The NIR and the expiry (milliseconds since the epoch) of a jeton; None when it cannot be read."""
    try:
        data = json.loads(base64.b64decode(value))
        return base64.b64decode(data["data"].split("#", 1)[1]).decode(), int(data["expire"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None
