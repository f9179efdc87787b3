"""Deliveries built exactly as RDV-Insertion builds them: compact JSON `{"data", "meta"}`, `X-RDVI-SIGNATURE`
= lowercase hex HMAC-SHA256 of the raw bytes."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from tests.support.fluxbuilder import NIR_A

SECRET = "s3cret-of-the-meuse-for-rdv-insertion-webhooks"
NIR15_A = NIR_A + "23"


def signed(payload: dict[str, Any], secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload, separators=(",", ":")).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/json", "X-Rdvi-Signature": signature}


def rdvi_user(**kw: Any) -> dict[str, Any]:
    base = {"id": 900, "role": "demandeur", "first_name": "Jean", "last_name": "Dupont", "birth_date": "1990-01-15"}
    return base | kw


def rdv_delivery(
    rdv_id: int, day, status: str, users: list[dict[str, Any]], event: str, stamp: str, category="rsa_orientation"
):
    starts = f"{day.isoformat()}T10:00:00.000+01:00"
    return {
        "data": {
            "id": rdv_id,
            "starts_at": starts,
            "status": status,
            "motif": {"name": "RSA orientation", "motif_category": {"short_name": category, "name": "RSA"}},
            "organisation": {"id": 3, "name": "Conseil départemental de la Meuse", "department_number": "55"},
            "agents": [],
            "lieu": None,
            "users": users,
            "participations": [
                {"id": rdv_id * 10 + n, "status": status, "starts_at": starts, "created_at": starts, "user": u}
                for n, u in enumerate(users)
            ],
        },
        "meta": {"model": "Rdv", "event": event, "timestamp": stamp},
    }
