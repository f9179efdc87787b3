"""Publishing the weekly files the Fil'R way: built, encrypted at rest, announced by e-mail with one expiring
link per file, each download recorded; idempotent, one run per département at a time (issue #13).

Order of a publication, so that nothing is half-published:

1. the files are built into a private temporary file, hashed, encrypted (AES-256-GCM, export key with its
   id) to `DATA_DIR/exports/{dep}/{week}/`, then renamed into place: a full disk leaves no file and no row;
2. one transaction records the files (a rebuild that gives the same bytes keeps the row as it was) and the
   new links (only their keyed hash: the token is the credential, given once, in the e-mail);
3. the e-mail is sent; if the server refuses it, the links just made are revoked (a link never works
   without having been announced) and the run fails, to be run again;
4. the files are marked published. A second run changes nothing and sends nothing, unless `resend` (new
   links, the same files) or a file's content changed (late facts for that week: published again).
"""

from __future__ import annotations

import email
import hashlib
import hmac
import json
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import structlog
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.orm import Session

from app.audit.chain import record_action
from app.clients.mail import send
from app.clock import today
from app.db import claim_write, session_scope
from app.errors import Busy, Unavailable
from app.exports import weekly
from app.exports.mail import message
from app.exports.publication import Built, Publication
from app.kit import jobs as leases
from app.kit.csv import write_csv
from app.kit.files import private_dir
from app.models import Export, ExportLink, ExportMail, JobLease
from app.models.base import utcnow
from app.security.nir import NirProtector
from app.settings import Settings

log = structlog.get_logger(__name__)

MAGIC = b"PRSA-EXPORT-1\n"
CHUNK = 1 << 20
LEASE_SECONDS = 600
RENEW_SECONDS = LEASE_SECONDS / 10  # a live job renews its lease every minute: never taken over while it runs
JOB = "export weekly"


class ExportBusy(Busy):
    """Another run publishes this département's files now."""

    code = "export_busy"


class PublishError(Unavailable):
    """The files were built but could not be announced (mail server); nothing was half-published."""

    code = "export_publish_failed"


class ExportsNotConfigured(PublishError):
    """A setting the publication needs is missing (said by name)."""

    status_code = 503
    code = "exports_not_configured"


class IntegrityError(Exception):
    """A stored file no longer matches its checksum (or its encryption tag): it is not served."""


# -- encryption at rest ------------------------------------------------------------------------------------


def _aad(departement: str, week: str, kind: str, sha256: str) -> bytes:
    return f"{departement}|{week}|{kind}|{sha256}".encode()


def encrypt_file(plain: IO[bytes], target: IO[bytes], key_id: str, key: bytes, aad: bytes) -> None:
    nonce = os.urandom(12)
    enc = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
    enc.authenticate_additional_data(aad)
    target.write(MAGIC + key_id.encode() + b"\n" + nonce)
    while chunk := plain.read(CHUNK):
        target.write(enc.update(chunk))
    target.write(enc.finalize() + enc.tag)


def decrypt_file(path: Path, ring: list[tuple[str, bytes]], aad: bytes, sha256: str) -> IO[bytes]:
    """The plain file (a spooled temporary file, rewound), its tag and checksum checked before anything is
    returned: a tampered or damaged file raises `IntegrityError` and nothing of it is served."""
    keys = dict(ring)
    size = path.stat().st_size
    with path.open("rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise IntegrityError("not an export file")
        key_id = f.readline().strip().decode()
        if key_id not in keys:
            raise IntegrityError(f"no export key with id {key_id!r} is configured")
        nonce = f.read(12)
        body = size - f.tell() - 16
        if body < 0:
            raise IntegrityError("truncated")
        out = tempfile.SpooledTemporaryFile(max_size=16 << 20)  # noqa: SIM115 - returned to the caller
        dec = Cipher(algorithms.AES(keys[key_id]), modes.GCM(nonce)).decryptor()
        dec.authenticate_additional_data(aad)
        digest = hashlib.sha256()
        left = body
        while left > 0:
            chunk = dec.update(f.read(min(CHUNK, left)))
            left -= CHUNK
            digest.update(chunk)
            out.write(chunk)
        try:
            dec.finalize_with_tag(f.read(16))
        except Exception:
            out.close()
            raise IntegrityError("the encryption tag does not match") from None
    if digest.hexdigest() != sha256:
        out.close()
        raise IntegrityError("the checksum does not match")
    out.seek(0)
    return out


# -- building ----------------------------------------------------------------------------------------------


def _filename(departement: str, week: str, kind: str) -> str:
    return f"rsa_{departement}_{week}_{kind}.csv"


def build(engine: Engine, settings: Settings, departement: str, week: weekly.Week) -> list[Built]:
    """Both files of the week, encrypted in their directory; their checksums (of the plain CSV)."""
    directory = settings.data_dir / "exports" / departement / week.label
    if not directory.exists():
        private_dir(directory)
    key_id, key = settings.export_key_ring[0]
    built = []
    for kind, columns in (("flux", weekly.FLUX_COLUMNS), ("pilotage", weekly.PILOTAGE_COLUMNS)):
        with tempfile.TemporaryFile(dir=directory) as plain:
            with engine.connect() as conn:
                if kind == "flux":
                    rows = weekly.flux_rows(conn, settings, departement, week)
                else:
                    rows = weekly.pilotage_rows(conn, settings, departement, week.sunday)
                count = write_csv(columns, rows, plain)
            size = plain.tell()
            plain.seek(0)
            digest = hashlib.sha256()
            while chunk := plain.read(CHUNK):
                digest.update(chunk)
            sha = digest.hexdigest()
            plain.seek(0)
            target = directory / f"{_filename(departement, week.label, kind)}.{sha[:12]}.enc"
            partial = target.with_suffix(".part")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                with os.fdopen(fd, "wb") as out:
                    encrypt_file(plain, out, key_id, key, _aad(departement, week.label, kind, sha))
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(partial, target)
            except BaseException:
                partial.unlink(missing_ok=True)  # a full disk leaves nothing behind
                raise
        built.append(Built(kind, _filename(departement, week.label, kind), count, sha, size, target, key_id))
    return built


# -- one run at a time -------------------------------------------------------------------------------------


@contextmanager
def lease(settings: Settings, job: str, scope: str) -> Iterator[None]:
    """Hold the job's lease for `scope` for the block; `ExportBusy` while a live process holds it."""
    me = leases.holder()
    try:
        with session_scope(settings, write=True) as session:
            claim_write(session)
            current = session.get(JobLease, (job, scope), with_for_update=True)
            now = utcnow()
            if current is not None:
                fresh = now - current.heartbeat_at < timedelta(seconds=LEASE_SECONDS)
                if fresh and leases.alive(current.holder):
                    raise ExportBusy(
                        f"another '{job}' of {scope} is running (process {current.holder}, since "
                        f"{current.acquired_at:%Y-%m-%d %H:%M} UTC); nothing was done, run it again when it ends"
                    )
                session.delete(current)  # its process is gone: taken over
                session.flush()
            session.add(JobLease(job=job, scope=scope, holder=me, acquired_at=now, heartbeat_at=now))
    except DBIntegrityError:  # PostgreSQL: another run inserted the lease between our read and our insert
        raise ExportBusy(f"another '{job}' of {scope} has just started; nothing was done") from None
    stop = threading.Event()
    renewal = threading.Thread(
        target=_renew_lease, args=(stop, settings, job, scope, me), name=f"lease-{job}", daemon=True
    )
    renewal.start()
    try:
        yield
    finally:
        stop.set()
        renewal.join()
        with session_scope(settings, write=True) as session:
            session.execute(delete(JobLease).where(JobLease.job == job, JobLease.scope == scope, JobLease.holder == me))


def _renew_lease(stop: threading.Event, settings: Settings, job: str, scope: str, me: str) -> None:
    """Beat the lease's heartbeat every `RENEW_SECONDS` while the job lives (issue #24 item 6: a job longer
    than `LEASE_SECONDS` was taken over by a second run). A beat that fails (the database busy or away a
    moment) is retried at the next one; a lease found taken over is logged, and the job goes on."""
    mine = (JobLease.job == job, JobLease.scope == scope, JobLease.holder == me)
    while not leases.pause(stop, RENEW_SECONDS):
        try:
            with session_scope(settings, write=True) as session:
                beat = session.execute(update(JobLease).where(*mine).values(heartbeat_at=utcnow()))
                renewed = beat.rowcount  # type: ignore[attr-defined]
        except Exception as exc:  # a beat never stops the job; the next one retries
            log.warning("job_lease_renewal_failed", job=job, scope=scope, error_type=type(exc).__name__)
            continue
        if not renewed:
            log.error("job_lease_lost", job=job, scope=scope)
            return


# -- publishing --------------------------------------------------------------------------------------------


def token_hash(settings: Settings, token: str) -> str:
    """The stored form of a link's token, keyed with a key of its own derived from the API key pepper: not
    the export key, so that rotating the export key leaves every link valid."""
    key = hmac.new(settings.pepper, b"passerelle export link", "sha256").digest()
    return hmac.new(key, token.encode(), "sha256").hexdigest()


def token_hashes(settings: Settings, token: str) -> list[str]:
    """The hashes a link's token may be stored under: the current one, and under each export key (links
    made before issue #14, whose tokens were keyed with the export key)."""
    legacy = [hmac.new(key, token.encode(), "sha256").hexdigest() for _id, key in settings.export_key_ring]
    return [token_hash(settings, token), *legacy]


def _record(session: Session, departement: str, week: str, files: list[Built]) -> tuple[list[Export], bool]:
    """Store the built files; returns the rows and whether they were all published already, unchanged."""
    rows, unchanged = [], True
    for f in files:
        row = session.scalar(
            select(Export).where(Export.departement_code == departement, Export.week == week, Export.kind == f.kind)
        )
        if row is not None and row.sha256 == f.sha256:
            if f.path != Path(row.path):
                f.path.unlink(missing_ok=True)  # the same bytes are already stored
            f.path = Path(row.path)
            unchanged = unchanged and row.published_at is not None
        else:
            unchanged = False
            if row is None:
                row = Export(departement_code=departement, week=week, kind=f.kind)
                session.add(row)
            elif row.path != str(f.path):
                Path(row.path).unlink(missing_ok=True)  # replaced by the corrected file
            row.filename, row.rows, row.sha256, row.size_bytes = f.filename, f.rows, f.sha256, f.size
            row.key_id, row.path, row.built_at, row.published_at = f.key_id, str(f.path), utcnow(), None
        rows.append(row)
    session.flush()
    return rows, unchanged


def publish(
    engine: Engine, settings: Settings, departement: str, week: weekly.Week, *, resend: bool = False
) -> Publication:
    """Build the week's files and announce them by e-mail, once (issue #24 item 4). The e-mail is committed
    with the links it announces before it is sent; a run killed after the server took it but before `sent`
    was recorded sends the very same message again (same Message-ID, same links) instead of new ones."""
    if not settings.public_url:
        raise ExportsNotConfigured("PASSERELLE_PUBLIC_URL is not set: the links in the e-mail need it")
    if not settings.export_recipients:
        raise ExportsNotConfigured("PASSERELLE_EXPORT_RECIPIENTS is empty: nobody to send the links to")
    with engine.connect() as conn:
        weekly.check_exportable(conn, departement, week, today(settings))
    result = Publication(departement, week.label)
    with lease(settings, JOB, departement):
        interrupted = None if resend else _interrupted_mail(engine, settings, departement, week.label)
        if interrupted is not None:
            mail_id, msg = interrupted
            result.files, result.resumed = _announced_files(engine, mail_id), True
        else:
            result.files = build(engine, settings, departement, week)
            prepared = _prepare_mail(engine, settings, result, resend)
            if prepared is None:
                return result  # published already, unchanged: nothing to send
            mail_id, msg = prepared
        _deliver(engine, settings, result, mail_id, msg)
        _write_manifest(settings, result)
        if settings.export_push_dir is not None:
            push_copies(settings, result)
    log.info("export_published", departement=departement, week=week.label, files=len(result.files))
    return result


def _protector(settings: Settings) -> NirProtector:
    return NirProtector(settings.encryption_keys, settings.hmac_key)


def _prepare_mail(
    engine: Engine, settings: Settings, result: Publication, resend: bool
) -> tuple[int, EmailMessage] | None:
    """Record the files, their links and the e-mail announcing them (status `sending`), in one transaction;
    None when the files were published already, unchanged (and not `resend`)."""
    expires = utcnow() + timedelta(days=settings.export_link_days)
    base = str(settings.public_url).rstrip("/")
    with session_scope(settings, write=True) as session:
        exports, result.unchanged = _record(session, result.departement, result.week, result.files)
        if result.unchanged and not resend:
            return None
        # an e-mail of this week left unconfirmed by a stopped run (`--resend` went past it): superseded by
        # this one, its links revoked, never sent again
        _end_pending(session, result.departement, result.week, "superseded")
        links = []
        for row in exports:
            token = secrets.token_urlsafe(32)
            link = ExportLink(
                export_id=row.id,
                token_hash=token_hash(settings, token),
                expires_at=expires,
                single_use=settings.export_single_use,
                recipients=", ".join(settings.export_recipients)[:1000],
            )
            session.add(link)
            links.append(link)
            result.links[row.kind] = f"{base}/api/v1/exports/download/{token}"
        session.flush()
        msg = message(settings, result, expires)
        msg["Message-ID"] = make_msgid("passerelle-rsa", urlsplit(base).hostname or "localhost")
        mail = ExportMail(
            departement_code=result.departement,
            week=result.week,
            status="sending",
            message_id=str(msg["Message-ID"])[:200],
            message_encrypted=_protector(settings).encrypt(msg.as_string()),
            export_ids=[row.id for row in exports],
            link_ids=[link.id for link in links],
            expires_at=expires,
        )
        session.add(mail)
        session.flush()
        return mail.id, msg


def _interrupted_mail(
    engine: Engine, settings: Settings, departement: str, week: str
) -> tuple[int, EmailMessage] | None:
    """The week's e-mail a run recorded and may have sent without recording it (`sending`): the same message
    to send again, or None. One whose links expired meanwhile is given up (`failed`): new links go out."""
    with session_scope(settings, write=True) as session:
        mail = session.scalar(
            select(ExportMail)
            .where(ExportMail.departement_code == departement, ExportMail.week == week, ExportMail.status == "sending")
            .order_by(ExportMail.id.desc())
            .limit(1)
        )
        if mail is None:
            return None
        if mail.expires_at <= utcnow():
            mail.status, mail.error, mail.message_encrypted = "failed", "its links expired before it was sent", ""
            return None
        text = _protector(settings).decrypt(mail.message_encrypted)
        log.warning("export_mail_resent", departement=departement, week=week, mail_id=mail.id)
        return mail.id, email.message_from_string(text, policy=policy.default)


def _announced_files(engine: Engine, mail_id: int) -> list[Built]:
    """The files an interrupted e-mail announced, as they were built (never rebuilt under its links)."""
    with engine.connect() as conn:
        ids = conn.scalar(select(ExportMail.export_ids).where(ExportMail.id == mail_id)) or []
        rows = conn.execute(select(Export).where(Export.id.in_(ids)).order_by(Export.kind)).all()
    return [Built(r.kind, r.filename, r.rows, r.sha256, r.size_bytes, Path(r.path), r.key_id) for r in rows]


def _end_pending(session: Session, departement: str, week: str, status: str) -> int:
    """End the week's e-mails not sent (failed, or unconfirmed): their links revoked, their copy emptied."""
    mails = session.scalars(
        select(ExportMail).where(
            ExportMail.departement_code == departement,
            ExportMail.week == week,
            ExportMail.status.in_(("failed", "sending")),
        )
    ).all()
    for mail in mails:
        session.execute(update(ExportLink).where(ExportLink.id.in_(mail.link_ids)).values(revoked_at=utcnow()))
        mail.status, mail.message_encrypted = status, ""
    return len(mails)


def _deliver(engine: Engine, settings: Settings, result: Publication, mail_id: int, msg: EmailMessage) -> None:
    """Send the recorded e-mail; record it sent (the files published) or failed (its links revoked), with its
    audit event, in one transaction."""
    try:
        send(settings, msg)
    except Exception as exc:
        with session_scope(settings, write=True) as session:  # never a live link that was not announced
            mail = session.get_one(ExportMail, mail_id)
            session.execute(update(ExportLink).where(ExportLink.id.in_(mail.link_ids)).values(revoked_at=utcnow()))
            mail.status, mail.error, mail.message_encrypted = "failed", type(exc).__name__, ""
            mail.attempts += 1
            record_action(session, "job:export weekly", "export.publish", result.departement, outcome="error",
                          detail={"week": result.week, "error": type(exc).__name__})  # fmt: skip
        log.error("export_mail_failed", departement=result.departement, week=result.week,
                  error_type=type(exc).__name__)  # fmt: skip
        raise PublishError(
            f"the e-mail could not be sent ({type(exc).__name__}: {exc}); the next run retries this week"
        ) from None
    with session_scope(settings, write=True) as session:
        mail = session.get_one(ExportMail, mail_id)
        mail.status, mail.sent_at, mail.message_encrypted = "sent", utcnow(), ""
        mail.attempts += 1
        session.execute(update(Export).where(Export.id.in_(mail.export_ids)).values(published_at=utcnow()))
        record_action(
            session,
            "job:export weekly",
            "export.publish",
            result.departement,
            detail={
                "week": result.week,
                "exports": list(mail.export_ids),
                "rows": [f.rows for f in result.files],
                "recipients": len(settings.export_recipients),
                "resent_same_message": result.resumed,
            },
        )
    result.mailed = True


def weeks_to_retry(engine: Engine, departement: str) -> list[str]:
    """The weeks whose latest e-mail failed, or was left unconfirmed by a run that stopped (and that no one
    cancelled): the next default run retries them (an unconfirmed one: the same message again)."""
    m = ExportMail
    latest = select(m.week, func.max(m.id).label("id")).where(m.departement_code == departement).group_by(m.week)
    latest_ids = latest.subquery()
    with engine.connect() as conn:
        weeks = conn.scalars(
            select(m.week)
            .join(latest_ids, m.id == latest_ids.c.id)
            .where(m.status.in_(("failed", "sending")))
            .order_by(m.week)
        )
        return list(weeks)


def cancel(engine: Engine, settings: Settings, departement: str, week: str, by: str) -> int:
    """Stop retrying a week's e-mail (failed, or left `sending` by a run that stopped): its links revoked,
    the e-mail `cancelled`, audited. Returns how many e-mails were cancelled (0: nothing pending)."""
    with lease(settings, JOB, departement), session_scope(settings, write=True) as session:  # never mid-send
        cancelled = _end_pending(session, departement, week, "cancelled")
        if cancelled:
            record_action(session, by, "export.cancel", departement, detail={"week": week, "mails": cancelled})
        return cancelled


def _write_manifest(settings: Settings, result: Publication) -> None:
    directory = settings.data_dir / "exports" / result.departement / result.week
    (directory / "manifest.json").write_text(json.dumps(result.manifest(), ensure_ascii=False, indent=2) + "\n")


def push_copies(settings: Settings, result: Publication) -> None:
    """A copy of each published file dropped in a directory (a mounted share), mode 600, written then
    renamed: the one target implemented (SFTP or Filr's REST API would take the same place)."""
    assert settings.export_push_dir is not None
    target = settings.export_push_dir / result.departement / result.week
    target.mkdir(parents=True, exist_ok=True)
    ring = settings.export_key_ring
    for f in result.files:
        with decrypt_file(f.path, ring, _aad(result.departement, result.week, f.kind, f.sha256), f.sha256) as plain:
            partial = target / f"{f.filename}.part"
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(plain, out)
            os.replace(partial, target / f.filename)


def aad_of(row: Export) -> bytes:
    return _aad(row.departement_code, row.week, row.kind, row.sha256)


def expiry_text(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%d/%m/%Y %H:%M UTC")
