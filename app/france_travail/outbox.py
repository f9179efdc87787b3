"""The Département's orientation decisions pushed to France Travail (Orientation usager v1), behind
`PASSERELLE_FT_ORIENTATION_PUSH` (off by default), through a durable outbox: never lost, never sent twice.

- **Enqueued** in the transaction that records an `orientation` event (one row per event: a replayed
  event adds nothing). A later decision for the same person supersedes the ones not sent yet. A decision
  whose parcours or organisme has no France Travail code in the settings is kept as `skipped`, with why.
- **Sent** by `passerelle ft push` (cron): a row goes `pending` -> `sending` (committed, claimed by one
  process only) -> `sent`; a France Travail unavailable or a person not found sends it back to `pending`
  with a growing delay, up to `PASSERELLE_FT_OUTBOX_MAX_ATTEMPTS`, then `failed`; a refusal (R997, R001,
  R002...) makes it `failed` at once, with France Travail's code.
- **Never twice**: a row found `sending` longer than a live sender could hold it (`sending_expires`: the
  process died between the call and its record) is not sent again blindly: France Travail's
  `lectureOrientation` is read first; if it already holds that orientation (parcours, organisme, origine,
  recorded since the row was claimed), the row is `sent`, otherwise it goes back to `pending`. A row another
  process is sending now is never touched.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from app.clients.france_travail import Agent, FranceTravailClient
from app.db import session_scope
from app.france_travail import service as ft
from app.models import FtOutboxItem, OrientationEvent
from app.models.base import utcnow
from app.persons.repository import audit_job_reads
from app.settings import Settings

JOB = "ft push"
RETRY_LATER = frozenset({"unavailable", "unknown", "ambiguous", "not_certified", "no_nir", "malformed"})


def enqueue_orientation(session: Session, settings: Settings, event: OrientationEvent) -> FtOutboxItem | None:
    """In the transaction recording an `orientation` event: queue it for France Travail (if the push is on)."""
    if not settings.ft_orientation_push or event.type != "orientation" or event.source == "france_travail":
        return None  # France Travail's own orientation (read by ft sync) is never pushed back to it
    if session.scalar(select(FtOutboxItem.id).where(FtOutboxItem.event_id == event.id)) is not None:
        return None
    parcours = settings.ft_orientation_parcours.get(event.type_parcours or "")
    organisme = settings.ft_orientation_organismes.get(event.organisme or "")
    missing = [name for name, value in (("parcours", parcours), ("organisme", organisme)) if not value]
    session.execute(
        update(FtOutboxItem)
        .where(FtOutboxItem.person_id == event.person_id, FtOutboxItem.status == "pending")
        .values(status="superseded", last_error=f"superseded by event {event.id}")
    )
    item = FtOutboxItem(
        event_id=event.id,
        person_id=event.person_id,
        departement_code=event.departement_code,
        body={"origine": settings.ft_orientation_origine, "parcours": parcours, "organisme": organisme},
        status="skipped" if missing else "pending",
        attempts=0,
        next_attempt_at=utcnow(),
        last_error=f"no France Travail code for this {' and '.join(missing)} (PASSERELLE_FT_ORIENTATION_*)"
        if missing
        else None,
    )
    session.add(item)
    return item


def _delay(attempts: int) -> timedelta:
    return timedelta(minutes=min(5 * 2 ** max(attempts - 1, 0), 24 * 60))


def sending_expires(settings: Settings) -> timedelta:
    """How long a `sending` row may be in a live process's hands: its attempts, their timeouts and waits."""
    s = settings
    attempt = s.ft_connect_timeout_seconds + s.ft_read_timeout_seconds + s.ft_retry_after_cap_seconds
    return timedelta(seconds=s.ft_max_attempts * attempt + 60)


def _recover(
    engine: Engine, settings: Settings, client: FranceTravailClient, agent: Agent, counts: Counter[str]
) -> None:
    """Rows left `sending` longer than a live sender could hold them (its process died): sent or not? France
    Travail's lectureOrientation says. A row another process is sending right now is left alone."""
    claimed_before = utcnow() - sending_expires(settings)
    with session_scope(settings) as session:
        stuck = list(
            session.scalars(
                select(FtOutboxItem).where(
                    FtOutboxItem.status == "sending", FtOutboxItem.next_attempt_at < claimed_before
                )
            )
        )
    for item in stuck:
        with engine.connect() as conn:
            ref = ft.load_refs(conn, settings, [item.person_id]).get(item.person_id)
        if ref is None:
            continue
        ex = ft.exchange(client, settings, ref, agent, kinds=("orientation",))
        if ex.outcome != "found":
            continue  # not known now: try again at the next run
        sent = _holds(ex.fetched.get("orientation"), item, settings)
        with session_scope(settings, write=True) as session:
            ft.store(session, settings, [ex], "push", agent)
            audit_job_reads(session, JOB, "ft.push", [(item.person_id, item.departement_code)])
            session.execute(
                update(FtOutboxItem)
                .where(FtOutboxItem.id == item.id, FtOutboxItem.status == "sending")
                .values(
                    status="sent" if sent else "pending",
                    sent_at=utcnow() if sent else None,
                    last_error="confirmed by lectureOrientation after an interruption" if sent else None,
                )
            )
        counts["confirmed" if sent else "requeued"] += 1


def _holds(known: dict[str, Any] | None, item: FtOutboxItem, settings: Settings) -> bool:
    """Whether what France Travail's lectureOrientation says holds this row's orientation (`known`: the
    mapped answer, `{"orientations": [...]}`)."""
    if not known:
        return False
    return any(holds_one(o, item, settings) for o in known.get("orientations") or ())


def holds_one(known: dict[str, Any], item: FtOutboxItem, settings: Settings) -> bool:
    """Whether one orientation France Travail knows is this row's: the same parcours, organisme and origine,
    recorded on or after the day the row was claimed (issue #24 item 7: the parcours alone took an earlier
    decision of another organisme for this one, which was then never sent). `ft sync` uses it too, so that the
    Département's own pushed orientation is never recorded as France Travail's (app.france_travail.orientations)."""
    same = all(known.get(name) == item.body.get(name) for name in ("parcours", "organisme", "origine"))
    claimed = item.next_attempt_at.astimezone(ZoneInfo(settings.business_timezone)).date()
    recorded = known.get("dateOrientation")
    return same and isinstance(recorded, str) and recorded >= claimed.isoformat()


def push_due(
    engine: Engine,
    settings: Settings,
    client: FranceTravailClient,
    *,
    limit: int | None = None,
    unavailable: list[str] | None = None,
) -> dict[str, int]:
    """Send the due decisions; returns counts by result (sent, retry, failed, confirmed, requeued, unconfirmed:
    France Travail's answer unreadable or a 500, checked by lectureOrientation at a later run). Why France
    Travail did not answer, for each decision it did not, goes to `unavailable` if given."""
    agent = Agent.batch("ft-push")
    counts: Counter[str] = Counter()
    _recover(engine, settings, client, agent, counts)
    now = utcnow()
    with session_scope(settings) as session:
        query = (
            select(FtOutboxItem.id)
            .where(FtOutboxItem.status == "pending", FtOutboxItem.next_attempt_at <= now)
            .order_by(FtOutboxItem.id)
        )
        due = list(session.scalars(query.limit(limit) if limit else query))
    for item_id in due:
        with session_scope(settings, write=True) as session:
            claimed = session.execute(  # type: ignore[attr-defined]  # an UPDATE's CursorResult
                update(FtOutboxItem)
                .where(FtOutboxItem.id == item_id, FtOutboxItem.status == "pending")
                .values(status="sending", attempts=FtOutboxItem.attempts + 1, next_attempt_at=utcnow())
            ).rowcount
            item = session.get(FtOutboxItem, item_id)
        if not claimed or item is None:
            continue  # another process took it
        with engine.connect() as conn:
            ref = ft.load_refs(conn, settings, [item.person_id]).get(item.person_id)
        if ref is None:
            _finish(settings, item, "failed", "the person no longer exists")
            counts["failed"] += 1
            continue
        body = dict(item.body)

        def steps(jeton: str, ex: ft.Exchange, body: dict[str, Any] = body) -> None:
            client.push_orientation(jeton, body, agent, trace=ex.calls)

        ex = ft.with_identity(client, settings, ref, agent, None, steps)
        with session_scope(settings, write=True) as session:
            ft.store(session, settings, [ex], "push", agent)
            audit_job_reads(session, JOB, "ft.push", [(item.person_id, item.departement_code)])
        if ex.outcome == "unavailable" and unavailable is not None:
            unavailable.append(ex.message or "no answer")
        if ex.outcome == "found":
            _finish(settings, item, "sent", None)
            counts["sent"] += 1
        elif _unsure(ex) and item.attempts < settings.ft_outbox_max_attempts:
            # an answer we cannot read (a 200 that is not France Travail's, a cut body) or its internal error
            # (500): it may or may not have taken the decision. Left `sending`: once its time is up,
            # lectureOrientation says (_recover), and it is sent again only if France Travail does not have it
            counts["unconfirmed"] += 1
        elif ex.outcome in RETRY_LATER and item.attempts < settings.ft_outbox_max_attempts:
            _finish(settings, item, "pending", f"{ex.outcome} ({ex.code}): {ex.message}", retry=True)
            counts["retry"] += 1
        else:
            _finish(settings, item, "failed", f"{ex.outcome} ({ex.code}): {ex.message}")
            counts["failed"] += 1
    return dict(counts)


def _unsure(ex: ft.Exchange) -> bool:
    """Whether France Travail may have taken the decision although its answer does not say so."""
    return ex.outcome == "malformed" or (ex.outcome == "ft_error" and (ex.code or "").startswith("HTTP5"))


def _finish(settings: Settings, item: FtOutboxItem, status: str, error: str | None, retry: bool = False) -> None:
    values: dict[str, Any] = {"status": status, "last_error": error[:300] if error else None}
    if status == "sent":
        values["sent_at"] = utcnow()
    if retry:
        values["next_attempt_at"] = utcnow() + _delay(item.attempts)
    with session_scope(settings, write=True) as session:
        session.execute(
            update(FtOutboxItem).where(FtOutboxItem.id == item.id, FtOutboxItem.status == "sending").values(**values)
        )


def outbox_counts(session: Session) -> dict[str, int]:

    rows = session.execute(select(FtOutboxItem.status, func.count()).group_by(FtOutboxItem.status)).all()
    return {status: int(n) for status, n in rows}
