"""Key rotation (issue #14, `passerelle keys`): a new key is put first in its setting, the older ones stay
after it while anything still uses them; `rotate` then re-encrypts what the older ones protect, in batches
(one transaction each: online, and an interrupted rotation resumes where it stopped, since only what is not
yet under the first key is selected). `status` counts what each key id protects.

- `nir` (PASSERELLE_NIR_ENCRYPTION_KEYS): the persons' NIRs, France Travail jetons, raw webhook bodies,
  the events kept aside until their person arrives, a weekly e-mail not yet confirmed sent.
  The NIR's keyed hash does not change: every person stays findable by NIR throughout.
- `export` (PASSERELLE_EXPORT_KEYS): the stored weekly files, rewritten under the new key (atomically:
  a link serves the old file or the new one, never half of either).
- `audit` (PASSERELLE_AUDIT_KEYS): nothing to rewrite: new events are proven and sealed with the first
  key, and the older ones verify with theirs (each event names its key id, in its seal and in its proof);
  keep them while those events are kept.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, bindparam, func, select, update

from app.audit.chain import action_row
from app.audit.proof import insert_events
from app.db import claim_write
from app.errors import NotConfigured
from app.exports.publish import IntegrityError, aad_of, decrypt_file, encrypt_file
from app.models import AccessRecord, Export, ExportMail, FtIdentity, PendingEvent, Person, WebhookDelivery
from app.security.nir import NirProtector
from app.settings import Settings

BATCH = 1000
JOB = "job:keys rotate"
KINDS = ("nir", "export", "audit")
# (table, column) of every value encrypted with the NIR keys, as `key_id:base64`
NIR_ENCRYPTED: tuple[tuple[Any, str], ...] = (
    (Person, "nir_encrypted"),
    (FtIdentity, "jeton_encrypted"),
    (WebhookDelivery, "body_encrypted"),
    (PendingEvent, "payload_encrypted"),
    (ExportMail, "message_encrypted"),
)


class RotationError(NotConfigured):
    """A value cannot be re-encrypted: its key is not configured any more."""

    code = "rotation_failed"


def _table(model: Any) -> Table:
    return model.__table__  # type: ignore[no-any-return]


def _key_id_of(column: Any) -> Any:
    """The key id a stored `key_id:base64` value starts with (SQL, both databases)."""
    return func.substr(column, 1, func.instr(column, ":") - 1)


def status(engine: Engine, settings: Settings) -> dict[str, Any]:
    """For each kind: the key that encrypts or seals now, and how many values each key id protects."""
    out: dict[str, Any] = {}
    with engine.connect() as conn:
        nir: dict[str, int] = {}
        for model, name in NIR_ENCRYPTED:
            column = _table(model).c[name]
            key = _key_id_of(column) if conn.dialect.name == "sqlite" else func.split_part(column, ":", 1)
            for key_id, n in conn.execute(select(key, func.count()).where(column.is_not(None), column != "")
                                          .group_by(key)):  # fmt: skip
                nir[key_id] = nir.get(key_id, 0) + n
        out["nir"] = {"active": settings.encryption_keys[0][0], "values_by_key": nir}
        e = _table(Export).c
        exports: dict[str, int] = dict(
            conn.execute(select(e.key_id, func.count()).where(e.path != "").group_by(e.key_id)).all()
        )
        out["export"] = {"active": settings.export_key_ring[0][0], "values_by_key": exports}
        a = _table(AccessRecord).c
        sealed: dict[str, int] = dict(
            conn.execute(select(a.key_id, func.count()).where(a.seq.is_not(None)).group_by(a.key_id)).all()
        )
        out["audit"] = {"active": settings.audit_key_ring[0][0], "values_by_key": sealed}
    return out


def _audit_step(conn: Any, kind: str, detail: dict[str, int]) -> None:
    """What one batch rewrote, audited in its transaction (issue #24 item 1: a killed rotation's committed
    batches were not audited); the command's `keys.rotate.KIND` event sums them up when it ends."""
    insert_events(conn, [action_row(JOB, f"keys.rotate.{kind}.step", None, detail=detail)])


def rotate_nir(engine: Engine, settings: Settings, progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Re-encrypt every value not under the first NIR key; returns how many per table."""
    protector = NirProtector(settings.encryption_keys, settings.hmac_key)
    active = settings.encryption_keys[0][0] + ":"
    counts: dict[str, int] = {}
    for model, name in NIR_ENCRYPTED:
        table = _table(model)
        column, pk = table.c[name], table.c.id
        last = 0
        counts[table.name] = 0
        while True:
            with engine.begin() as conn:
                claim_write(conn)
                rows = conn.execute(
                    select(pk, column)
                    .where(pk > last, column.is_not(None), column != "", ~column.startswith(active))
                    .order_by(pk)
                    .limit(BATCH)
                ).all()
                if not rows:
                    break
                values = []
                for row_id, value in rows:
                    try:
                        values.append({"rid": row_id, "v": protector.encrypt(protector.decrypt(value))})
                    except KeyError as exc:
                        raise RotationError(
                            f"{table.name} {row_id}: {exc.args[0]}; put that key back after the new one"
                        ) from None
                conn.execute(update(table).where(pk == bindparam("rid")).values({name: bindparam("v")}), values)
                _audit_step(conn, "nir", {table.name: len(rows)})
                last = rows[-1][0]
                counts[table.name] += len(rows)
            if progress:
                progress(len(rows))
    return counts


def rotate_export(engine: Engine, settings: Settings, progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Rewrite every stored export file not under the first export key."""

    ring = settings.export_key_ring
    key_id, key = ring[0]
    done = 0
    with engine.connect() as conn:
        ids = list(
            conn.scalars(select(Export.id).where(Export.path != "", Export.key_id != key_id).order_by(Export.id))
        )
    for export_id in ids:
        with engine.begin() as conn:
            claim_write(conn)
            row = conn.execute(select(Export).where(Export.id == export_id)).first()
            if row is None or not row.path or row.key_id == key_id:
                continue
            export = Export(**row._asdict())
            path = Path(export.path)
            try:
                plain = decrypt_file(path, ring, aad_of(export), export.sha256)
            except (IntegrityError, FileNotFoundError) as exc:
                raise RotationError(f"export {export_id} ({export.filename}): {exc}") from None
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
            try:
                with plain, os.fdopen(fd, "wb") as target:
                    encrypt_file(plain, target, key_id, key, aad_of(export))
                    target.flush()
                    os.fsync(target.fileno())
                conn.execute(update(Export).where(Export.id == export_id).values(key_id=key_id))
                _audit_step(conn, "export", {"exports": 1, "export_id": export_id})
                os.replace(tmp, path)  # the row commits just after: an old key id on a new file still decrypts
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        done += 1
        if progress:
            progress(1)
    return {"exports": done}
