"""RDV-Insertion's signed webhooks (docs/integrations.md): what a delivery says of each person, mapped to
orientation-side events, idempotent and in the order of the sender's own timestamps.

- The signature (`X-RDVI-SIGNATURE`: lowercase hex HMAC-SHA256 of the raw body with the département's
  secret) is checked on the raw bytes, in constant time, before anything is parsed (`verify`).
- Every well-signed delivery is stored as received, the body encrypted (`WebhookDelivery`), then split
  into items (`WebhookItem`): one per participation of an `Rdv`, one per `Invitation`.
- An item is applied to its person as an event whose `external_id` names the RDV-Insertion record and
  the delivery's `meta.timestamp`; a newer version of the same record supersedes the one before (never an
  update in place); an older one is acknowledged and ignored; the same bytes twice change nothing.
- A person not (yet) known is kept as `unmatched` with the reason, and matched again after each flux
  ingestion (`rematch`): their events then count from their own dates.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from app.audit.chain import record_action
from app.clock import today
from app.db import get_engine, one_of, session_scope
from app.errors import PasserelleError
from app.models import AmbiguousKey, FluxFile, Person, PersonKey, WebhookDelivery, WebhookItem
from app.orientation.service import EventIn, record_event
from app.persons.keys import identity_key_text, key_hash, matricule_key_text
from app.security.nir import NirProtector
from app.settings import Settings

log = structlog.get_logger(__name__)

SOURCE = "rdv-insertion"
WEBHOOK_PRINCIPAL = "webhook:rdv-insertion"
PRESENCE = {"seen": "present", "noshow": "absent", "excused": "excuse", "revoked": "annule", "unknown": "prevu"}
CHANNEL = {"sms": "sms", "email": "email", "postal": "courrier"}
ROLES = {"demandeur": ("DEM",), "conjoint": ("CJT",), None: ("DEM", "CJT")}
LIVE = ("applied", "unmatched", "planned")  # item statuses that count as the record's latest known version
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,40}$")  # record_key (60) = "participation:" + at most 40


class Malformed(ValueError):
    """A well-signed delivery that cannot be read: stored for inspection, answered 422."""


def verify(secret: bytes, body: bytes, signature: str | None) -> bool:
    if not signature:
        return False
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature.strip().lower())


@dataclass
class Item:
    record_key: str
    event: dict[str, Any]  # EventIn fields but external_id / supersedes
    keys: list[str]
    status: str = "pending"  # or "ignored" (a motif category not mapped, an invitation update)
    reason: str | None = None


@dataclass
class Parsed:
    model: str
    event: str
    timestamp: datetime
    items: list[Item] = field(default_factory=list)


def _aware(value: Any, what: str) -> datetime:
    if not isinstance(value, str):
        raise Malformed(f"{what} is missing")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Malformed(f"{what} is not an ISO date-time") from None
    if moment.tzinfo is None:
        raise Malformed(f"{what} has no UTC offset: its day cannot be told")
    return moment


def _same_departement(number: Any, departement: str) -> bool:
    given = str(number or "").strip().upper()
    return given.zfill(3) == departement.upper() or (
        given.isdigit() and departement.isdigit() and int(given) == int(departement)
    )


class KeyMaker:
    """The keys a person may be found by, from an RDV-Insertion `user`: the NIR's lookup hash, the numéro CAF
    + role under each organisme of the département (normalised both ways: leading zeros, the 15-character
    CAF form), names + birth date. Keyed hashes only: nothing of the user is kept in clear."""

    def __init__(self, settings: Settings, organismes: list[tuple[str, str]]) -> None:
        self.settings = settings
        self.organismes = organismes
        self.nir = NirProtector(settings.encryption_keys, settings.hmac_key)

    def keys(self, user: dict[str, Any]) -> list[str]:
        out: list[str] = []
        nir = "".join(str(user.get("nir") or "").split())
        if len(nir) >= 13 and nir[:13].isalnum():
            out.append("nir:" + self.nir.lookup_hash(nir[:13].upper()))
        number = "".join(str(user.get("affiliation_number") or "").split())
        if number:
            # CAF files write a matricule on 7 digits or on 15 (7 digits and 8 zeros); RDV-Insertion strips
            # the leading zeros of a number longer than 7 characters: try every form of the same number
            bare = number.lstrip("0") or "0"
            cores = {bare}
            if len(bare) > 8 and bare.endswith("0" * 8):
                cores.add(bare[:-8].lstrip("0") or "0")
            forms = {number}
            for core in cores:
                forms |= {core, core.zfill(7), core.zfill(7) + "0" * 8}
            for fonorg, numorg in self.organismes:
                for role in ROLES.get(user.get("role"), ROLES[None]):
                    for form in sorted(forms):
                        out.append(
                            "mat:" + key_hash(self.settings.hmac_key, matricule_key_text(fonorg, numorg, form, role))
                        )
        last, first, born = user.get("last_name"), user.get("first_name"), user.get("birth_date")
        if last and first and born:
            out.append("id:" + key_hash(self.settings.hmac_key, identity_key_text(last, first, born)))
        return out


def _record_id(value: Any, what: str) -> str:
    """An RDV-Insertion record id (an integer; a short token tolerated), never a structure or a long text."""
    if isinstance(value, bool) or not isinstance(value, int | str) or not ID_RE.match(str(value)):
        raise Malformed(f"{what} is not an id")
    return str(value)


def _object(value: Any, what: str) -> dict[str, Any]:
    """A JSON object of the delivery, absent (null) read as empty; anything else is malformed."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Malformed(f"{what} is not an object")
    return value


def _text(value: Any, what: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise Malformed(f"{what} is not a text")


def parse(body: bytes, departement: str, settings: Settings, keys: KeyMaker) -> Parsed:
    """What a delivery says, or `Malformed` with the reason (never its content): any shape the reading
    does not expect (a text where an object goes, a date out of range, JSON nested beyond reason) is
    unreadable, never a server error (issue #23), so that it is stored and can be replayed after a fix."""
    try:
        return _parse(body, departement, settings, keys)
    except Malformed:
        raise
    except RecursionError:
        raise Malformed("the body is nested too deep") from None
    except (TypeError, AttributeError, KeyError, IndexError, ValueError, OverflowError) as exc:
        # the exception's text may quote the delivery (personal data): only its kind is said
        raise Malformed(f"a field has an unexpected type or value ({type(exc).__name__})") from None


def _parse(body: bytes, departement: str, settings: Settings, keys: KeyMaker) -> Parsed:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Malformed("the body is not JSON") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), dict):
        raise Malformed('the body is not {"data": {...}, "meta": {...}}')
    meta = payload.get("meta")
    if not isinstance(meta, dict):
        raise Malformed("meta is missing")
    model, event = meta.get("model"), meta.get("event")
    if model not in ("Rdv", "Invitation"):
        raise Malformed(f"meta.model {str(model)[:30]!r} is not Rdv or Invitation")
    if event not in ("created", "updated", "destroyed"):
        raise Malformed(f"meta.event {str(event)[:30]!r} is not created, updated or destroyed")
    parsed = Parsed(model, event, _aware(meta.get("timestamp"), "meta.timestamp"))
    data = payload["data"]
    tz = ZoneInfo(settings.business_timezone)
    if model == "Rdv":
        organisation = _object(data.get("organisation"), "organisation")
        if organisation.get("department_number") is not None and not _same_departement(
            organisation.get("department_number"), departement
        ):
            raise Malformed(
                f"the RDV belongs to département {str(organisation['department_number'])[:5]!r}, not {departement}"
            )
        motif = _object(data.get("motif"), "motif")
        category = _text(_object(motif.get("motif_category"), "motif.motif_category").get("short_name"), "category")
        if category in settings.rdv_insertion_orientation_categories:
            kind = "rdv_orientation"
        elif category in settings.rdv_insertion_accompaniment_categories:
            kind = "rdv_accompagnement"
        else:
            kind = None
        participations = data.get("participations")
        if not isinstance(participations, list):
            raise Malformed("an Rdv without participations")
        structure = (_text(organisation.get("name"), "organisation.name") or "")[:200] or None
        for n, part in enumerate(participations, start=1):
            if not isinstance(part, dict) or not isinstance(part.get("user"), dict) or part.get("id") is None:
                raise Malformed(f"participation {n} has no user (or no id)")
            part_id = _record_id(part["id"], f"participation {n}: id")
            starts = _aware(part.get("starts_at") or data.get("starts_at"), f"participation {n}: starts_at")
            status = "revoked" if event == "destroyed" else (part.get("status") or data.get("status") or "unknown")
            presence = PRESENCE.get(status) if isinstance(status, str) else None
            if presence is None:
                raise Malformed(f"participation {n}: status {str(status)[:20]!r} is unknown")
            item = Item(
                f"participation:{part_id}",
                {
                    "type": kind or "rdv_orientation",
                    "date": starts.astimezone(tz).date().isoformat(),
                    "presence": presence,
                }
                | ({"structure": structure} if structure else {}),
                keys.keys(part["user"]),
            )
            if kind is None:
                item.status, item.reason = "ignored", f"motif category {str(category)[:40]!r} is not mapped"
            parsed.items.append(item)
    else:
        user = data.get("user")
        if not isinstance(user, dict) or data.get("id") is None:
            raise Malformed("an Invitation without user (or id)")
        invitation_id = _record_id(data["id"], "the invitation's id")
        created = _aware(data.get("created_at"), "created_at")
        item = Item(
            f"invitation:{invitation_id}",
            {"type": "invitation", "date": created.astimezone(tz).date().isoformat()}
            | ({"channel": CHANNEL[data["format"]]} if _text(data.get("format"), "format") in CHANNEL else {}),
            keys.keys(user),
        )
        if event != "created":
            item.status, item.reason = "ignored", f"an invitation {event}: only its creation is an event"
        parsed.items.append(item)
    return parsed


def organismes_of(conn: Connection, departement: str) -> list[tuple[str, str]]:
    ft = FluxFile.__table__.c
    found = conn.execute(
        select(ft.fonorg, ft.numorg).where(ft.departement_code == departement, ft.fonorg.is_not(None)).distinct()
    ).all()
    return sorted({(f, n) for f, n in found if f and n})


def match(conn: Connection, departement: str, keys: list[str]) -> tuple[int | None, str | None]:
    """The person the keys designate: the NIR first, then the numéro CAF + role, then names + birth date;
    a kind of key that designates two persons designates nobody (reason given)."""
    pt, pk, ak = Person.__table__.c, PersonKey.__table__.c, AmbiguousKey.__table__.c
    for prefix in ("nir:", "mat:", "id:"):
        values = [k[len(prefix) :] for k in keys if k.startswith(prefix)]
        if not values:
            continue
        if prefix == "nir:":
            found = set(
                conn.execute(
                    select(pt.id).where(pt.departement_code == departement, one_of(conn, pt.nir_hash, values))
                ).scalars()
            )
        else:
            shared = set(
                conn.execute(
                    select(ak.value).where(ak.departement_code == departement, one_of(conn, ak.value, values))
                ).scalars()
            )
            found = set(
                conn.execute(
                    select(pk.person_id).where(
                        pk.departement_code == departement,
                        one_of(conn, pk.value, [v for v in values if v not in shared]),
                    )
                ).scalars()
            )
        if len(found) == 1:
            return found.pop(), None
        if len(found) > 1:
            what = {"nir:": "NIR", "mat:": "numéro CAF and role", "id:": "names and birth date"}[prefix]
            return None, f"its {what} match {len(found)} persons"
    return None, "no person known with this NIR, numéro CAF + role or names + birth date (yet)"


def _latest(session: Session, departement: str, record_key: str, statuses: tuple[str, ...]) -> WebhookItem | None:
    return session.scalar(
        select(WebhookItem)
        .where(
            WebhookItem.departement_code == departement,
            WebhookItem.record_key == record_key,
            WebhookItem.status.in_(statuses),
        )
        .order_by(WebhookItem.meta_timestamp.desc(), WebhookItem.id.desc())
        .limit(1)
    )


def _apply(session: Session, settings: Settings, item: WebhookItem) -> None:
    """Apply a matched item: an event superseding the record's version applied before (if any)."""
    assert item.person_id is not None
    person = session.get(Person, item.person_id)
    assert person is not None
    before = _latest(session, item.departement_code, item.record_key, ("applied",))
    stamp = item.meta_timestamp.strftime("%Y%m%dT%H%M%S%f")
    fields = dict(item.event) | {"external_id": f"rdvi:{item.departement_code}:{item.record_key}:{stamp}"}
    if before is not None and before.person_id == item.person_id:
        fields["supersedes"] = before.event.get("external_id")
    if date.fromisoformat(fields["date"]) > today(settings):
        item.status, item.reason = "planned", "dated in the future: applied when the RDV has taken place"
        return
    try:
        row, _created = record_event(
            session, settings, person, EventIn.model_validate(fields), SOURCE, source="webhook"
        )
    except (PasserelleError, ValueError) as exc:
        item.status, item.reason = "ignored", str(getattr(exc, "message", exc))[:200]
        return
    item.event = fields
    item.status, item.event_id = "applied", row.id


def _take(session: Session, settings: Settings, departement: str, item: WebhookItem) -> None:
    """An item to apply: ignored if a version at least as recent is known, else matched and applied."""
    latest = _latest(session, departement, item.record_key, LIVE)
    if latest is not None and latest.id != item.id and latest.meta_timestamp >= item.meta_timestamp:
        item.status, item.reason = "older", "a version at least as recent was received already"
        return
    item.person_id, reason = match(session.connection(), departement, list(item.keys))
    if item.person_id is None:
        item.status, item.reason = "unmatched", reason
    else:
        _apply(session, settings, item)


def replay(
    session: Session, settings: Settings, departement: str, since: datetime | None, *, unreadable: bool = False
) -> dict[str, int]:
    """Deliveries received since a moment (or, `unreadable`, the malformed ones whenever received), read
    again with the current settings and code (a motif category newly mapped, a delivery that was malformed
    for a reason since fixed): what they now say and was not taken is taken, in the order received; what
    was applied stays (a correction is a new delivery)."""
    protector = NirProtector(settings.encryption_keys, settings.hmac_key)
    keys = KeyMaker(settings, organismes_of(session.connection(), departement))
    counts: dict[str, int] = {}
    query = select(WebhookDelivery).where(WebhookDelivery.departement_code == departement)
    if since is not None:
        query = query.where(WebhookDelivery.received_at >= since)
    if unreadable:
        query = query.where(WebhookDelivery.status == "malformed")
    deliveries = session.scalars(query.order_by(WebhookDelivery.received_at, WebhookDelivery.id)).all()
    for delivery in deliveries:
        if not delivery.body_encrypted:  # past its retention, the purge emptied it: nothing left to read
            counts["body_purged"] = counts.get("body_purged", 0) + 1
            continue
        body = protector.decrypt(delivery.body_encrypted).encode()
        try:
            parsed = parse(body, departement, settings, keys)
        except Malformed as exc:
            delivery.reason = str(exc)[:300]
            counts["still_malformed"] = counts.get("still_malformed", 0) + 1
            continue
        if delivery.status == "malformed":
            counts["now_readable"] = counts.get("now_readable", 0) + 1
        delivery.status, delivery.reason = "processed", None
        delivery.model, delivery.event, delivery.meta_timestamp = parsed.model, parsed.event, parsed.timestamp
        known = {
            i.record_key: i
            for i in session.scalars(select(WebhookItem).where(WebhookItem.delivery_id == delivery.id)).all()
        }
        for it in parsed.items:
            item = known.get(it.record_key)
            if item is not None and item.status != "ignored":
                continue  # taken already (applied, waiting, older)
            if it.status == "ignored":
                continue
            if item is None:
                item = WebhookItem(
                    delivery_id=delivery.id,
                    departement_code=departement,
                    record_key=it.record_key,
                    meta_timestamp=parsed.timestamp,
                )
                session.add(item)
            item.keys, item.event, item.status, item.reason = it.keys, it.event, "pending", None
            session.flush()
            _take(session, settings, departement, item)
            session.flush()
            counts[item.status] = counts.get(item.status, 0) + 1
    return counts


def process(session: Session, settings: Settings, departement: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """Store and apply one well-signed delivery (inside the caller's write transaction). Returns the HTTP
    status (200, or 422 for a malformed delivery, kept for inspection) and the answer's body."""
    conn = session.connection()
    digest = hashlib.sha256(body).hexdigest()
    seen = session.scalar(
        select(WebhookDelivery.id).where(
            WebhookDelivery.departement_code == departement,
            WebhookDelivery.body_sha256 == digest,
            WebhookDelivery.status == "processed",
        )
    )
    if seen is not None:
        record_action(
            session,
            WEBHOOK_PRINCIPAL,
            "webhook.delivery",
            departement,
            detail={"delivery": seen, "status": "duplicate"},
        )
        return 200, {"status": "duplicate", "delivery": seen}
    protector = NirProtector(settings.encryption_keys, settings.hmac_key)
    delivery = WebhookDelivery(
        source=SOURCE,
        departement_code=departement,
        body_encrypted=protector.encrypt(body.decode("utf-8", "replace")),
        body_sha256=digest,
        signature_valid=True,
        status="processed",
    )
    try:
        parsed = parse(body, departement, settings, KeyMaker(settings, organismes_of(conn, departement)))
    except Malformed as exc:
        delivery.status, delivery.reason = "malformed", str(exc)[:300]
        session.add(delivery)
        session.flush()
        log.warning("webhook_malformed", source=SOURCE, departement=departement, delivery=delivery.id)
        record_action(
            session,
            WEBHOOK_PRINCIPAL,
            "webhook.delivery",
            departement,
            outcome="rejected",
            detail={"delivery": delivery.id, "status": "malformed"},
        )
        return 422, {
            "error": "malformed",
            "message": f"well signed but unreadable, kept for inspection: {delivery.reason}",
            "details": {"delivery": delivery.id, "status": "malformed"},
            "delivery": delivery.id,
        }
    delivery.model, delivery.event, delivery.meta_timestamp = parsed.model, parsed.event, parsed.timestamp
    session.add(delivery)
    session.flush()
    counts: dict[str, int] = {}
    for it in parsed.items:
        item = WebhookItem(
            delivery_id=delivery.id,
            departement_code=departement,
            record_key=it.record_key,
            meta_timestamp=parsed.timestamp,
            keys=it.keys,
            event=it.event,
            status=it.status,
            reason=it.reason,
        )
        if item.status == "pending":
            _take(session, settings, departement, item)
        session.add(item)
        session.flush()
        counts[item.status] = counts.get(item.status, 0) + 1
    log.info("webhook_processed", source=SOURCE, departement=departement, delivery=delivery.id, **counts)
    record_action(
        session,
        WEBHOOK_PRINCIPAL,
        "webhook.delivery",
        departement,
        detail={"delivery": delivery.id, "event": parsed.event, "items": counts},
    )
    return 200, {"status": "processed", "delivery": delivery.id, "items": counts}


def rematch(settings: Settings, departement: str) -> int:
    """Items kept while their person was unknown, matched again (after a flux brought persons); applied in
    the order of their records' versions. Returns how many were applied."""

    with get_engine(settings).connect() as conn:
        waiting_any = conn.execute(
            select(WebhookItem.id)
            .where(WebhookItem.departement_code == departement, WebhookItem.status == "unmatched")
            .limit(1)
        ).first()
    if waiting_any is None:
        return 0
    applied = 0
    with session_scope(settings, write=True) as session:
        conn = session.connection()
        waiting = session.scalars(
            select(WebhookItem)
            .where(WebhookItem.departement_code == departement, WebhookItem.status == "unmatched")
            .order_by(WebhookItem.meta_timestamp, WebhookItem.id)
        ).all()
        for item in waiting:
            newer = _latest(session, departement, item.record_key, ("applied",))
            if newer is not None and newer.meta_timestamp > item.meta_timestamp:
                item.status, item.reason = "older", "a more recent version was applied"
                continue
            person_id, reason = match(conn, departement, list(item.keys))
            if person_id is None:
                item.reason = reason
                continue
            item.person_id = person_id
            _apply(session, settings, item)
            applied += item.status == "applied"
        session.flush()
    return applied


def unmatched(session: Session, departements: list[str]) -> list[dict[str, Any]]:
    """What was received and could not be given to a person, with why (no personal data)."""
    rows = session.scalars(
        select(WebhookItem)
        .where(WebhookItem.departement_code.in_(departements), WebhookItem.status == "unmatched")
        .order_by(WebhookItem.meta_timestamp, WebhookItem.id)
    ).all()
    return [
        {
            "id": r.id,
            "departement": r.departement_code,
            "record": r.record_key,
            "version": r.meta_timestamp.isoformat(),
            "event": r.event.get("type"),
            "date": r.event.get("date"),
            "reason": r.reason,
        }
        for r in rows
    ]
