"""Each audit event carries, from the moment it is written, proof that the service wrote it (issue #23,
item 6): `proof` = `key_id:nonce:HMAC-SHA256(audit key, nonce + "\\n" + canonical JSON of its content)`,
under the first key of PASSERELLE_AUDIT_KEYS (the key id names which one, so a proof outlives a rotation
while its key stays in the list). The content is every column of the event but its id, which the database
gives after the proof is made; the random nonce makes two identical events two different proofs, and the
unique index on `proof` refuses a copy of a genuine event (a replay).

`insert_events` is the one way events are written (the reads' hook, `record_action_now`, the download
links, the purge): the sealer (app.audit.chain.seal) never seals an event whose proof does not verify, and
`passerelle audit verify` names it, so a row inserted by hand into the journal (a forged, back-dated read)
is reported, never sealed into the chain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import weakref
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, insert
from sqlalchemy.orm import Session

from app.db import settings_of
from app.models import AccessRecord
from app.models.base import utcnow

CONTENT_COLUMNS = ("id", "at", "principal_id", "agent_identifiant", "departement_code", "person_id", "action",
                   "endpoint", "request_id", "found", "purpose", "source_address", "outcome", "detail")  # fmt: skip
PROVEN_COLUMNS = CONTENT_COLUMNS[1:]  # all but the id, given by the database after the proof is made

_keys: weakref.WeakKeyDictionary[Engine, tuple[str, bytes]] = weakref.WeakKeyDictionary()


def canonical(value: Any) -> Any:
    if isinstance(value, datetime):
        value = value if value.tzinfo else value.replace(tzinfo=UTC)
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


def _mac(key: bytes, nonce: str, values: dict[str, Any]) -> str:
    body = json.dumps([canonical(values.get(c)) for c in PROVEN_COLUMNS], ensure_ascii=False, separators=(",", ":"))
    return hmac.new(key, f"{nonce}\n{body}".encode(), hashlib.sha256).hexdigest()


def make_proof(key_id: str, key: bytes, values: dict[str, Any], nonce: str | None = None) -> str:
    """`nonce`: 16 random hex digits (drawn here when not given)."""
    nonce = nonce or secrets.token_hex(8)
    return f"{key_id}:{nonce}:{_mac(key, nonce, values)}"


def proof_problem(keys: dict[str, bytes], values: dict[str, Any]) -> str | None:
    """None when the event's proof verifies; otherwise why not (missing, unknown key, does not match)."""
    proof = values.get("proof")
    if not proof:
        return "carries no proof"
    key_id, _, rest = str(proof).partition(":")
    nonce, _, mac = rest.partition(":")
    key = keys.get(key_id)
    if key is None:
        return f"is proven with an unknown key id {key_id!r}"
    if not hmac.compare_digest(_mac(key, nonce, values), mac):
        return "does not match its proof"
    return None


def _write_key(bind: Engine | Connection) -> tuple[str, bytes]:
    engine = bind.engine if isinstance(bind, Connection) else bind
    key = _keys.get(engine)
    if key is None:
        key = _keys[engine] = settings_of(engine).audit_key_ring[0]
    return key


def proven(bind: Engine | Connection, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows as they will be written (the defaults the table would give made explicit), each with its
    proof under the first audit key of the settings `bind` was made with."""
    key_id, key = _write_key(bind)
    rows = list(rows)
    # the nonces drawn at once: one read of the system's random source per batch, not per event (a page of 50
    # access records made 50 of them; issue #27), 16 hex digits each as before
    nonces = secrets.token_hex(8 * len(rows))
    out = []
    for i, row in enumerate(rows):
        values = {c: row.get(c) for c in PROVEN_COLUMNS}
        values["at"] = values["at"] or utcnow()
        values["found"] = True if values["found"] is None else values["found"]
        values["proof"] = make_proof(key_id, key, values, nonces[16 * i : 16 * i + 16])
        out.append(values)
    return out


def insert_events(target: Session | Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Write audit events (`app.audit.chain.action_row` dicts), each with its proof: the one insert path of
    `access_records` (tests/audit/test_audit_proof.py checks no other one appears)."""
    if not rows:
        return
    # a Core insert on the unit of work's own connection (same transaction): the ORM's bulk path costs more
    # than the insert itself (issue #27)
    if isinstance(target, Session):
        target.flush()  # what the unit of work holds first, as the ORM's own execute would (autoflush)
    conn = target.connection() if isinstance(target, Session) else target
    conn.execute(insert(cast(Table, AccessRecord.__table__)), proven(conn, rows))
