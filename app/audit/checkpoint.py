"""Signed checkpoints of the audit trail, for an auditor who holds none of our keys (issue #23, item 7;
docs/audit.md).

The sealed events, in chain order, are the leaves of an RFC 6962 Merkle tree (app.audit.merkle): leaf n is
SHA-256(0x00 || canonical JSON of (n, every content column of event #n)), the same JSON the HMAC seal covers
(app.audit.chain), computable by anyone who can read the rows. A checkpoint is the tree's size and root in
the C2SP tlog-checkpoint text, a C2SP signed note signed with Ed25519 (PASSERELLE_AUDIT_SIGNING_KEY):

    passerelle-rsa.departement.example/audit
    1234
    <base64 of the 32-byte root>

    — passerelle-rsa.departement.example/audit <base64(4-byte key id || 64-byte signature)>

key id = SHA-256(key name || 0x0A || 0x01 || 32-byte public key)[:4]. The server publishes one every
`audit_checkpoint_interval_seconds` and `audit anchor` one more, to a directory the auditor controls and/or
by e-mail. `passerelle audit verify --checkpoint FILE --public-key FILE` recomputes the tree from the database
with the public key only: an event altered, deleted, inserted or reordered before the checkpoint changes the
root; the journal deleted or cut leaves fewer events than the checkpoint counts; `--event ID` proves one
event's inclusion.

A purge deletes the oldest events but keeps their leaf hashes (`audit_leaves`) and records the chain's new
base in its own audit event (`audit.purge`, `detail.base_seq`, in the transaction that moves it): the
checkpoints signed before still verify, and a base moved without a purge is named.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.audit.chain import AUDIT_PURGE, AUDIT_RETENTION_MIN_DAYS
from app.audit.merkle import TreeBuilder, inclusion_proof, leaf_hash, verify_inclusion
from app.audit.proof import CONTENT_COLUMNS, canonical
from app.kit.jobs import pause
from app.models import AccessRecord, AuditChain, AuditLeaf
from app.models.base import utcnow
from app.settings import Settings

log = structlog.get_logger(__name__)

ED25519 = b"\x01"  # the signed-note signature type of Ed25519 (C2SP signed-note)
MAX_NOTE_BYTES = 64 * 1024
CHUNK = 5000


class CheckpointError(ValueError):
    """A checkpoint or public key file that is not what it should be (malformed, unreadable)."""


class SignatureError(Exception):
    """The checkpoint carries no valid signature of the key given."""


# -- leaves -----------------------------------------------------------------------------------------------


def event_leaf(seq: int, values: dict[str, Any]) -> bytes:
    """An event's leaf hash: SHA-256(0x00 || canonical JSON of (seq, its content columns))."""
    body = json.dumps([seq, *(canonical(values[c]) for c in CONTENT_COLUMNS)], ensure_ascii=False,
                      separators=(",", ":"))  # fmt: skip
    return leaf_hash(body.encode())


def keep_purged_leaves(session: Session, base: int, upto: int) -> None:
    """Before the purge deletes events #base+1 to #upto: keep their leaf hashes (in its transaction)."""
    columns = [getattr(AccessRecord, c) for c in (*CONTENT_COLUMNS, "seq")]
    last = base
    while last < upto:
        rows = session.execute(
            select(*columns).where(AccessRecord.seq > last, AccessRecord.seq <= upto).order_by(AccessRecord.seq)
            .limit(CHUNK)
        ).all()  # fmt: skip
        if not rows:
            return
        session.execute(insert(AuditLeaf), [{"seq": r.seq, "leaf": event_leaf(r.seq, r._asdict()).hex()} for r in rows])
        last = rows[-1].seq


# -- keys and notes ---------------------------------------------------------------------------------------


def origin(settings: Settings) -> str:
    """The log's name: the checkpoint's first line and the signature's key name."""
    if settings.audit_checkpoint_origin:
        return settings.audit_checkpoint_origin.strip()
    host = urlparse(settings.public_url).hostname if settings.public_url else None
    return f"passerelle-rsa.{host or 'local'}/audit"


def _valid_name(name: str) -> bool:
    return bool(name) and not re.search(r"[\s+]", name)


def key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + public).digest()[:4]


def private_key(settings: Settings) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(settings.audit_signing_seed)


def raw_public(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_text(name: str, key: Ed25519PrivateKey) -> str:
    """What the auditor keeps: the public key in PEM and as a signed-note verifier key
    (`name+keyid+base64(0x01 || key)`, the form Go's golang.org/x/mod/sumdb/note reads)."""
    public = key.public_key()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    raw = raw_public(public)
    vkey = f"{name}+{key_id(name, raw).hex()}+{base64.b64encode(ED25519 + raw).decode()}"
    return f"{pem}{vkey}\n"


def parse_public_key(text: str) -> tuple[str | None, bytes]:
    """(key name if given, 32-byte Ed25519 public key) from a verifier key line and/or a PEM block."""
    outside_pem = re.sub(r"-----BEGIN PUBLIC KEY-----.*?-----END PUBLIC KEY-----", "", text, flags=re.S)
    for line in outside_pem.splitlines():
        found = re.fullmatch(r"([^\s+]+)\+([0-9a-fA-F]{8})\+([A-Za-z0-9+/]+=*)", line.strip())
        if found:
            name, hexid, b64 = found.groups()
            try:
                decoded = base64.b64decode(b64, validate=True)
            except binascii.Error as exc:
                raise CheckpointError("the verifier key's last part is not base64") from exc
            if len(decoded) != 33 or decoded[:1] != ED25519:
                raise CheckpointError("the verifier key is not an Ed25519 key (type 0x01, 32 bytes)")
            if key_id(name, decoded[1:]).hex() != hexid.lower():
                raise CheckpointError("the verifier key's id does not match its name and key")
            return name, decoded[1:]
    if "-----BEGIN PUBLIC KEY-----" in text:
        start = text.index("-----BEGIN PUBLIC KEY-----")
        end = text.find("-----END PUBLIC KEY-----", start)
        if end < 0:
            raise CheckpointError("the PEM public key is cut")
        try:
            key = serialization.load_pem_public_key(text[start : end + 24].encode())
        except ValueError as exc:
            raise CheckpointError("the PEM public key does not parse") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise CheckpointError("the public key is not an Ed25519 key")
        return None, raw_public(key)
    raise CheckpointError("no public key found: a PEM block or a line name+keyid+base64, from `audit public-key`")


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return "".join(f"{line}\n" for line in lines)


def sign_text(text: str, name: str, key: Ed25519PrivateKey) -> str:
    """A signed note (C2SP signed-note): the text, a blank line, one signature line by `name`'s key."""
    signature = key_id(name, raw_public(key)) + key.sign(text.encode())
    return f"{text}\n\u2014 {name} {base64.b64encode(signature).decode()}\n"


def sign(checkpoint: Checkpoint, key: Ed25519PrivateKey) -> str:
    """The signed checkpoint: its text signed under its origin."""
    return sign_text(checkpoint.text(), checkpoint.origin, key)


def _parse_text(text: str) -> Checkpoint:
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError("a checkpoint has at least three lines: origin, tree size, root hash")
    name, size_text, root_text, *extensions = lines
    if not _valid_name(name):
        raise CheckpointError("the checkpoint's origin line is empty or holds a space or a '+'")
    if not re.fullmatch(r"0|[1-9][0-9]{0,18}", size_text):
        raise CheckpointError("the checkpoint's second line is not a tree size in decimal")
    try:
        root = base64.b64decode(root_text, validate=True)
    except binascii.Error:
        root = b""
    if len(root) != 32:
        raise CheckpointError("the checkpoint's third line is not the base64 of a 32-byte root hash")
    if any(not line for line in extensions):
        raise CheckpointError("the checkpoint's text holds an empty line")
    return Checkpoint(name, int(size_text), root, tuple(extensions))


def open_note(note: str, public: bytes, name: str | None = None) -> Checkpoint:
    """The checkpoint of a signed note, once a signature by this key verifies (CheckpointError if the note
    is malformed, SignatureError if no signature of this key verifies). The key's name is the checkpoint's
    origin unless given (a verifier key names it)."""
    text = note_text(note)
    checkpoint = _parse_text(text)
    open_signed(note, public, name or checkpoint.origin)
    if name is not None and checkpoint.origin != name:
        raise SignatureError(f"the checkpoint's origin {checkpoint.origin!r} is not the key's name {name!r}")
    return checkpoint


def note_text(note: str) -> str:
    if len(note.encode()) > MAX_NOTE_BYTES or re.search(r"[\x00-\x09\x0b-\x1f]", note):
        raise CheckpointError("not a signed note: too long or holding control characters")
    cut = note.rfind("\n\n")
    if cut < 0 or not note.endswith("\n"):
        raise CheckpointError("not a signed note: no blank line between the text and its signatures")
    return note[: cut + 1]


def open_signed(note: str, public: bytes, expected_name: str) -> str:
    """The text of a signed note once a signature of `expected_name`'s key verifies; signatures of other
    keys are ignored (C2SP signed-note)."""
    text = note_text(note)
    signatures = note[len(text) + 1 :]
    expected_id = key_id(expected_name, public)
    verifier = Ed25519PublicKey.from_public_bytes(public)
    verified = False
    for line in signatures[:-1].split("\n"):
        if not line.startswith("\u2014 "):
            raise CheckpointError("not a signed note: a signature line starts with '— ' (em dash, space)")
        sig_name, _, b64 = line[2:].partition(" ")
        try:
            blob = base64.b64decode(b64, validate=True)
        except binascii.Error as exc:
            raise CheckpointError("a signature line's signature is not base64") from exc
        if sig_name != expected_name or blob[:4] != expected_id:
            continue  # another key's signature (a witness's): ignored (C2SP signed-note)
        try:
            verifier.verify(blob[4:], text.encode())
        except InvalidSignature as exc:
            raise SignatureError(f"the signature of {expected_name} does not verify: the note was altered") from exc
        verified = True
    if not verified:
        raise SignatureError(f"no signature of the key given ({expected_name}, id {expected_id.hex()}) in this note")
    return text


# -- the tree over the journal ----------------------------------------------------------------------------


@dataclass
class Tree:
    """The tree of leaves #1..#size as the database has them (the leaves themselves only if kept, for a
    proof), and what is missing."""

    size: int = 0
    builder: TreeBuilder = field(default_factory=TreeBuilder)
    leaves: list[bytes] | None = None
    problems: list[dict[str, Any]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.builder.size == self.size

    def add(self, kind: str, message: str, **where: Any) -> None:
        if len(self.problems) < 1000:
            self.problems.append({"kind": kind, "message": message, **where})


def _stored_leaves(engine: Engine, upto: int, after: int = 0) -> Iterator[tuple[int, bytes]]:
    last = after
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(AuditLeaf.seq, AuditLeaf.leaf).where(AuditLeaf.seq > last, AuditLeaf.seq <= upto)
                .order_by(AuditLeaf.seq).limit(CHUNK)
            ).all()  # fmt: skip
        if not rows:
            return
        for seq, leaf in rows:
            yield seq, bytes.fromhex(leaf)
        last = rows[-1].seq


def _event_leaves(engine: Engine, after: int, upto: int) -> Iterator[tuple[int, bytes]]:
    columns = [getattr(AccessRecord, c) for c in (*CONTENT_COLUMNS, "seq")]
    last = after
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(*columns).where(AccessRecord.seq > last, AccessRecord.seq <= upto).order_by(AccessRecord.seq)
                .limit(CHUNK)
            ).all()  # fmt: skip
        if not rows:
            return
        for row in rows:
            yield row.seq, event_leaf(row.seq, row._asdict())
        last = rows[-1].seq


LEGACY_LEAF = "purged before signed checkpoints (migration 0022)"


def legacy_leaf(seq: int) -> bytes:
    """The public placeholder leaf of an event purged before leaf hashes were kept (its content is gone)."""
    return leaf_hash(json.dumps([seq, LEGACY_LEAF], separators=(",", ":")).encode())


def chain_state(engine: Engine) -> tuple[int, int] | None:
    """(base, head) of the chain, None if its state is gone."""
    with Session(engine) as session:
        chain = session.get(AuditChain, 1)
        return (chain.base_seq, chain.head_seq) if chain else None


def _leaves_from(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(AuditChain.leaves_from).where(AuditChain.id == 1)) or 0)


def journal_tree(engine: Engine, size: int, base: int, keep_leaves: bool = False) -> Tree:
    """Leaves #1..#size: placeholders up to `leaves_from` (purged before migration 0022), kept hashes up to
    the base (purged events), recomputed from the rows after it."""
    tree = Tree(size=size, leaves=[] if keep_leaves else None)
    expected = 1
    legacy = min(_leaves_from(engine), base, size)

    def take(source: Iterator[tuple[int, bytes]], upto: int, what: str) -> None:
        nonlocal expected
        for seq, leaf in source:
            if seq != expected:
                tree.add("deleted", f"{what} #{expected} to #{seq - 1} are missing", first=expected, last=seq - 1)
            tree.builder.append(leaf)
            if tree.leaves is not None:
                tree.leaves.append(leaf)
            expected = seq + 1
        if expected <= upto:
            tree.add("deleted", f"{what} #{expected} to #{upto} are missing", first=expected, last=upto)
            expected = upto + 1

    take(((seq, legacy_leaf(seq)) for seq in range(1, legacy + 1)), legacy, "placeholders")
    take(_stored_leaves(engine, min(base, size), after=legacy), min(base, size), "the leaf hashes of purged events")
    if size > base:
        take(_event_leaves(engine, base, size), size, "events")
    return tree


def _recorded_base(engine: Engine) -> tuple[int, int] | None:
    """(base, id of the event) the latest sealed `audit.purge` event recorded, if any, among those that hold
    together: a retention of at least the floor (183 days), the youngest event it removed older than that
    retention when it ran. An unsealed one (inserted by hand, never sealed) or an incoherent one is not a
    purge (issue #23 review: a forged row moved the base past a keyless auditor)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(AccessRecord.id, AccessRecord.detail, AccessRecord.at)
            .where(AccessRecord.action == AUDIT_PURGE, AccessRecord.outcome == "ok", AccessRecord.seq.is_not(None))
            .order_by(AccessRecord.id.desc())
        )
        for event_id, detail, at in rows:
            try:
                data = json.loads(detail or "{}")
                value, retention = data.get("base_seq"), data.get("retention_days")
                youngest = datetime.fromisoformat(data["youngest_at"]) if data.get("youngest_at") else None
            except (ValueError, AttributeError, TypeError, KeyError):
                continue
            if not isinstance(value, int) or not isinstance(retention, int) or retention < AUDIT_RETENTION_MIN_DAYS:
                continue
            if youngest is None or at is None or _aware(youngest) > _aware(at) - timedelta(days=retention):
                continue
            return value, event_id
    return None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# -- publication ------------------------------------------------------------------------------------------


def current_checkpoint(engine: Engine, settings: Settings) -> Checkpoint:
    """The checkpoint of every sealed event; refused (RuntimeError) if the journal misses any."""
    state = chain_state(engine)
    base, head = state if state else (0, 0)
    tree = journal_tree(engine, head, base)
    if tree.problems:
        raise RuntimeError("the audit journal has gaps: " + "; ".join(p["message"] for p in tree.problems[:3]))
    return Checkpoint(origin(settings), head, tree.builder.root())


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def mail(settings: Settings, checkpoint: Checkpoint, note: str) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = f"Passerelle RSA - point de contrôle signé du journal d'audit - {checkpoint.size} événements"
    msg["From"] = settings.mail_from or f"passerelle-rsa@{(settings.smtp_host or 'localhost')}"
    msg["To"] = ", ".join(settings.audit_checkpoint_email)
    msg.set_content(
        "Bonjour,\n\n"
        f"Voici le point de contrôle signé du journal d'audit de Passerelle RSA ({checkpoint.origin}) : "
        f"{checkpoint.size} événements scellés, le {utcnow():%d/%m/%Y à %H:%M} (UTC).\n"
        "Conservez la pièce jointe : `passerelle audit verify --checkpoint FICHIER --public-key CLE` vérifie "
        "que le journal la contient toujours, sans aucune de nos clés (docs/audit.md).\n\n"
        "Passerelle RSA - message automatique, merci de ne pas y répondre.\n"
    )
    msg.add_attachment(note.encode(), maintype="text", subtype="plain", filename=f"checkpoint-{checkpoint.size}.txt",
                       params={"charset": "utf-8"})  # fmt: skip
    return msg


def publish(engine: Engine, settings: Settings, *, mail_again: bool = True) -> tuple[Checkpoint, str]:
    """Sign the current checkpoint and hand it to each destination configured: `checkpoint-<size>.txt` and
    `latest` in PASSERELLE_AUDIT_CHECKPOINT_DIR, a mail to PASSERELLE_AUDIT_CHECKPOINT_EMAIL (unless
    `mail_again` is false and this size was already written there). Returns the checkpoint and its note."""
    from app.clients.mail import send

    checkpoint = current_checkpoint(engine, settings)
    note = sign(checkpoint, private_key(settings))
    fresh = True
    if settings.audit_checkpoint_dir is not None:
        folder = Path(settings.audit_checkpoint_dir)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"checkpoint-{checkpoint.size}.txt"
        fresh = not target.exists()
        if fresh:
            _write(target, note)
        _write(folder / "latest", note)
    if settings.audit_checkpoint_email and (fresh or mail_again):
        send(settings, mail(settings, checkpoint, note))
    log.info("audit_checkpoint_published", size=checkpoint.size)
    return checkpoint, note


def _claim(engine: Engine, size: int) -> bool:
    """This worker publishes the checkpoint of `size` events: no other has published it or a larger one."""
    with engine.begin() as conn:
        claimed = conn.execute(
            update(AuditChain).where(AuditChain.id == 1, AuditChain.published_size < size).values(published_size=size)
        )
        return bool(claimed.rowcount)


def publishing(settings: Settings) -> bool:
    return settings.audit_checkpoint_dir is not None or bool(settings.audit_checkpoint_email)


class CheckpointPublisher:
    """The server's publisher: a thread that publishes a checkpoint every `interval` seconds when the chain
    grew since the last one (a destination must be configured)."""

    def __init__(self, engine: Engine, settings: Settings, interval: float) -> None:
        self.engine, self.settings, self.interval = engine, settings, interval
        self.last_size: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-checkpoints", daemon=True)

    def start(self) -> None:
        if self.interval > 0 and publishing(self.settings):
            self._thread.start()

    def once(self) -> None:
        try:
            state = chain_state(self.engine)
            if state is None or state[1] == self.last_size:
                return
            self.last_size = state[1]
            if not _claim(self.engine, state[1]):
                return  # another worker publishes this size (one e-mail per checkpoint, `latest` never back)
            publish(self.engine, self.settings, mail_again=False)
        except Exception as exc:  # the next round tries again; the auditor sees the gap in the dates
            log.error("audit_checkpoint_failed", error_type=type(exc).__name__)

    def _run(self) -> None:
        while not pause(self._stop, self.interval):
            self.once()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(timeout=30)


# -- verification with the public key only ----------------------------------------------------------------


@dataclass
class CheckpointVerification:
    size: int
    head_seq: int = 0
    base_seq: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)
    event: dict[str, Any] | None = None

    @property
    def intact(self) -> bool:
        return not self.problems

    def add(self, kind: str, message: str, **where: Any) -> None:
        self.problems.append({"kind": kind, "message": message, **where})

    def as_dict(self) -> dict[str, Any]:
        return {"intact": self.intact, "checkpoint_size": self.size, "head_seq": self.head_seq,
                "base_seq": self.base_seq, "problems": self.problems, "event": self.event}  # fmt: skip


def verify_checkpoint(engine: Engine, checkpoint: Checkpoint, event_id: int | None = None) -> CheckpointVerification:
    """Recompute the tree of the first `checkpoint.size` events from the database and compare its root; check
    the chain's base was moved by a purge; with `event_id`, prove that event's inclusion. Never writes."""
    result = CheckpointVerification(size=checkpoint.size)
    try:
        state = chain_state(engine)
        if state is None:
            result.add("deleted", f"the chain's state is gone: the journal was deleted or emptied (the checkpoint "
                       f"counts {checkpoint.size} event(s))")  # fmt: skip
            return result
        result.base_seq, result.head_seq = state
        if result.head_seq < checkpoint.size:
            result.add("deleted", f"the chain ends at #{result.head_seq} but the checkpoint counts "
                       f"{checkpoint.size} event(s): the latest were deleted, or the journal", first=result.head_seq
                       + 1, last=checkpoint.size)  # fmt: skip
        tree = journal_tree(engine, checkpoint.size, result.base_seq, keep_leaves=event_id is not None)
        result.problems.extend(tree.problems)
        with engine.connect() as conn:
            below = conn.scalar(
                select(AccessRecord.seq).where(AccessRecord.seq <= result.base_seq).order_by(AccessRecord.seq).limit(1)
            )
        if below is not None:
            result.add("inserted", f"event #{below} is numbered at or below the chain's base #{result.base_seq}")
        if result.base_seq:
            recorded = _recorded_base(engine)
            if recorded is None or recorded[0] != result.base_seq:
                said = f"the last purge recorded #{recorded[0]}" if recorded else "no purge recorded one"
                result.add("base", f"the chain starts after #{result.base_seq} but {said}: the base was moved "
                           "without a purge")  # fmt: skip
        if tree.complete and tree.builder.root() != checkpoint.root:
            result.add("modified", f"the first {checkpoint.size} event(s) do not hash to the checkpoint's root: "
                       "one was altered, inserted, reordered or replaced before it")  # fmt: skip
        if event_id is not None:
            result.event = _prove(engine, checkpoint, tree, event_id, result)
    except SQLAlchemyError as exc:
        if _unreachable(exc):
            raise  # the database is down or refused us: an environment failure (exit 3), not a deleted journal
        result.add("deleted", f"the audit journal cannot be read ({type(exc).__name__}): deleted or damaged")
    return result


def _unreachable(exc: SQLAlchemyError) -> bool:
    """A failure of the connection itself (server down, refused, lost), not of what it holds: SQLite says a
    missing table with an OperationalError too, PostgreSQL with a ProgrammingError."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    if isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    text = str(exc.orig).lower()
    return not any(word in text for word in ("no such table", "no such column", "malformed", "not a database"))


def _prove(
    engine: Engine, checkpoint: Checkpoint, tree: Tree, event_id: int, result: CheckpointVerification
) -> dict[str, Any]:
    columns = [getattr(AccessRecord, c) for c in (*CONTENT_COLUMNS, "seq")]
    with engine.connect() as conn:
        row = conn.execute(select(*columns).where(AccessRecord.id == event_id)).first()
    out: dict[str, Any] = {"id": event_id, "included": False}
    if row is None:
        result.add("event", f"no event {event_id} in the journal (never written, purged or deleted)", id=event_id)
        return out
    if row.seq is None or row.seq > checkpoint.size:
        where = "not sealed yet" if row.seq is None else f"#{row.seq}, after the checkpoint's {checkpoint.size}"
        result.add("event", f"event {event_id} is {where}: take a newer checkpoint", id=event_id)
        return out
    leaf = event_leaf(row.seq, row._asdict())
    out.update(seq=row.seq, leaf_index=row.seq - 1, leaf_hash=base64.b64encode(leaf).decode())
    if not tree.complete or tree.leaves is None:
        result.add("event", f"event {event_id} cannot be proved: the journal misses events", id=event_id)
        return out
    proof = inclusion_proof(row.seq - 1, tree.leaves)
    out["proof"] = [base64.b64encode(p).decode() for p in proof]
    out["included"] = verify_inclusion(row.seq - 1, checkpoint.size, leaf, proof, checkpoint.root)
    if not out["included"]:
        result.add("event", f"event {event_id} (#{row.seq}) is not in the checkpoint's tree as it reads now",
                   id=event_id)  # fmt: skip
    return out
