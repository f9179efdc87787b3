"""Applies a flux file to the database: all or nothing, idempotent, keeping every person's dated history.

One file = one transaction. Foyers are read as a stream and applied in batches inside that transaction
(bounded memory whatever the file size); a file-level problem rolls everything back, and the file is
then recorded as rejected and copied to quarantine with its report. See docs/ingestion.md.

The entry point is `ingest_file` (a file's whole life: checks, apply, rejection, audit, re-match, refresh).
The work is in the package: app.flux.report (options, report, errors, the received file), app.flux.bulk
(tables and bulk writes), app.flux.identity (who each person is), app.flux.apply (a batch's states,
absences, replay).
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from app.audit.chain import action_row, record_action_now
from app.audit.proof import insert_events
from app.clock import today
from app.flux.apply import Ingestion
from app.flux.bulk import T_DEPARTEMENTS, T_FILES, T_INSTRUCTION, begin_ingestion, lock_departement
from app.flux.derive import Prepared
from app.flux.instruction import InstructionReader, apply_instruction, peek_nature
from app.flux.pipeline import BATCH_FOYERS, InlineSource, ProcessSource, open_early, open_source
from app.flux.reader import WARNING, FluxLimits, FluxRejected
from app.flux.records import SENDER_OF_APPLIEME, FluxHeader
from app.flux.report import (
    MAX_LISTED,
    MAX_REASON,
    IngestInputError,
    IngestOptions,
    IngestReport,
    ProgressCallback,
    ReceivedFile,
    ReferenceIntegrityError,
    file_sha256,
)
from app.integrations.rdv_insertion.webhooks import rematch
from app.kit.files import copy_private, private_dir, write_private_text
from app.orientation import aside
from app.orientation.arrivals import apply_pending
from app.orientation.episodes import refresh_pending
from app.security.auth import DEPARTEMENT_RE
from app.settings import Settings

__all__ = [
    "BATCH_FOYERS",
    "INGESTED_BY_JOB",
    "MAX_LISTED",
    "MAX_REASON",
    "IngestInputError",
    "IngestOptions",
    "IngestReport",
    "ProgressCallback",
    "ReceivedFile",
    "ReferenceIntegrityError",
    "file_sha256",
    "ingest_file",
    "refresh_after_commit",
]

log = structlog.get_logger(__name__)


def _organisme_of(header: FluxHeader, first: Prepared | None) -> tuple[str | None, str | None]:
    if first is not None and first.fonorg:
        return first.fonorg, first.numorg
    return SENDER_OF_APPLIEME.get(header.applieme), None


@contextmanager
def _lighter_collections() -> Iterator[None]:
    """An ingestion allocates millions of short-lived tuples, and each full pass of the cyclic garbage
    collector would also walk every object the process already held (modules, metadata, caches). Those are
    set aside (`gc.freeze`) while a file is applied: ~8 % of the loader's time on PostgreSQL, the same
    memory. (Spacing collections out instead saved as much but grew the peak with the file: measured,
    bench/BENCHMARKS.md run 9.)"""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


INGESTED_BY_JOB = {"cli": "job:flux ingest", "watch": "job:flux watch", "demo": "job:demo"}


def ingest_file(
    engine: Engine,
    settings: Settings,
    path: Path,
    options: IngestOptions,
    progress: ProgressCallback | None = None,
    *,
    refresh: bool = True,
    refresh_progress: Callable[[int, int], None] | None = None,
    source: InlineSource | ProcessSource | None = None,
) -> IngestReport:
    """Apply one flux file, then (`refresh`) the entry episodes of the persons it changed. Returns its
    report; never raises for a bad file (status `rejected`). Each file, whatever became of it, is an audit
    event (`flux.ingest`: who, the file's id, its status and counts). `source`: this file's batches, opened
    by the caller with `open_early(settings, path, options.parallel)` (closed here).

    Raises `IngestInputError` for a wrong option (département, --initial-stock, reception date).
    """

    report = _ingest_file(
        engine, settings, path, options, progress, refresh=refresh, refresh_progress=refresh_progress, opened=source
    )
    if report.status == "duplicate":  # nothing was written: the event alone (applied or rejected: in their commit)
        by, departement, kw = _ingest_event(options, report)
        record_action_now(engine, by, "flux.ingest", departement, **kw)
        if refresh:  # a run killed after the file's commit left its persons queued: the same file finishes it
            refresh_after_commit(engine, report, refresh_progress)
    return report


def _ingest_event(options: IngestOptions, report: IngestReport) -> tuple[str, str | None, dict[str, Any]]:
    """The `flux.ingest` event of a file: (who, département, the rest of `action_row`'s arguments)."""
    by = options.ingested_by or "job:flux ingest"
    detail = {
        "file_id": report.file_id,
        "status": report.status,
        "type_flux": report.type_flux,
        "persons": report.persons_read,
        "new_persons": report.new_persons,
        "state_changes": report.state_changes,
        "duplicate_of": report.duplicate_of,
    }
    outcome = "rejected" if report.status == "rejected" else "ok"
    return (
        INGESTED_BY_JOB.get(by, by),
        report.departement or options.departement,
        {"outcome": outcome, "detail": detail},
    )


def _audit_in(conn: Connection, options: IngestOptions, report: IngestReport) -> None:
    """The file's `flux.ingest` event, in the transaction that records the file (issue #24 item 1: written
    after the commit, a kill in between left an applied file with no event)."""
    by, departement, kw = _ingest_event(options, report)
    insert_events(conn, [action_row(by, "flux.ingest", departement, **kw)])


def _ingest_file(
    engine: Engine,
    settings: Settings,
    path: Path,
    options: IngestOptions,
    progress: ProgressCallback | None = None,
    *,
    refresh: bool = True,
    refresh_progress: Callable[[int, int], None] | None = None,
    opened: InlineSource | ProcessSource | None = None,
) -> IngestReport:
    started = time.perf_counter()
    name = options.display_name or path.name
    report = IngestReport(status="applied", filename=name, received_on=options.received_on.isoformat())
    source = opened
    drained_later = False  # applied: drained below with its other steps; interrupted: by the next post or start
    try:
        _check_options(settings, options)
        if source is None:
            # a big file's reading process starts first: its start overlaps the hashing and the checks below
            source = open_early(settings, path, options.parallel)
        received = ReceivedFile.of(path, options, started)
        dup = _known_duplicate(engine, received)
        if dup is not None:
            report.status = "duplicate"
            report.duplicate_of = dup
            report.duration_ms = received.elapsed_ms()
            return report
        if source is None and peek_nature(path) == "I":
            # an instruction flux: contacts, DSP, parcours of demands being instructed; never a beneficiary flux
            return _instruction_file(engine, settings, received, report)
        try:
            _apply_beneficiary(engine, settings, received, report, progress, source)
        except _Duplicate as dup_exc:
            return _duplicate_report(received, dup_exc.file_id)
        except FluxRejected as exc:
            return _record_rejection(engine, settings, received, report, exc)
        except IntegrityError as exc:
            # Two concurrent ingestions of the same content: the second is a duplicate.
            if "uq_flux_files_applied_content" in str(exc.orig):
                return IngestReport(status="duplicate", filename=name, received_on=options.received_on.isoformat())
            raise
        drained_later = True
    except (KeyboardInterrupt, SystemExit):
        drained_later = True
        raise
    finally:
        if source is not None:
            source.close()
        if not drained_later:
            # events posted while this file held SQLite's writer were kept aside whatever its end (review #27)
            _apply_queued_events(settings, report)
    _log_applied(report)
    _rematch_webhooks(settings, report)
    _apply_pending_events(settings, report)
    _apply_queued_events(settings, report)
    if refresh:
        refresh_after_commit(engine, report, refresh_progress)
    return report


def _check_options(settings: Settings, options: IngestOptions) -> None:
    if options.departement is not None and not DEPARTEMENT_RE.match(options.departement):
        raise IngestInputError(f"invalid département {options.departement!r}")
    if options.received_on > today(settings):
        raise IngestInputError(f"the reception date {options.received_on} is in the future")


def _known_duplicate(engine: Engine, received: ReceivedFile) -> int | None:
    """The same bytes received by two départements are two receptions (an empty daily file is the same for
    every département of a CAF): a duplicate is only ever one of the same département. Before parsing,
    that is known when given or when only one département is served; otherwise the check on the content,
    inside the transaction, decides."""
    with engine.connect() as conn:
        return _duplicate_in(conn, received)


def _duplicate_in(conn: Connection, received: ReceivedFile, dep: str | None = None) -> int | None:
    dep = dep or received.options.departement
    if dep is None:
        known = conn.execute(select(T_DEPARTEMENTS.c.code).limit(2)).scalars().all()
        dep = known[0] if len(known) == 1 else None
    if dep is None:
        return None
    ft = T_FILES.c
    dup = conn.execute(
        select(ft.id).where(ft.file_sha256 == received.sha256, ft.status == "applied", ft.departement_code == dep)
    ).first()
    return None if dup is None else int(dup[0])


def _duplicate_report(received: ReceivedFile, duplicate_of: int, nature: str = "D") -> IngestReport:
    return IngestReport(
        status="duplicate",
        filename=received.name,
        received_on=received.received_on.isoformat(),
        nature=nature,
        duplicate_of=duplicate_of,
        duration_ms=received.elapsed_ms(),
    )


def _apply_beneficiary(
    engine: Engine,
    settings: Settings,
    received: ReceivedFile,
    report: IngestReport,
    progress: ProgressCallback | None,
    opened: InlineSource | ProcessSource | None = None,
) -> None:
    """A beneficiary flux, in one transaction: its batches, then its end (absences, replay), then its row."""
    options = received.options
    with _lighter_collections(), engine.begin() as conn:
        begin_ingestion(conn)
        # the file's row and its département's lock: once the département is known (`_start`)
        job = Ingestion(conn, settings, options, report)
        started_job = False
        source = opened or open_source(
            received.path,
            BATCH_FOYERS,
            settings.hmac_key,
            options.parallel,
            settings.ingest_parallel_min_bytes,
            FluxLimits.of(settings),
        )
        try:
            for batch in source.batches():
                if not started_job:
                    first = Prepared.named(batch[0]) if batch else None
                    _start(conn, job, received, source.header, first, report)
                    started_job = True
                if batch:
                    job.apply_batch(batch)
                if progress:
                    progress(job.report.foyers, source.bytes_read)
        finally:
            source.close()
        job.finish()
        _record_applied(conn, job, received, source.content_sha256)
        _audit_in(conn, options, report)


def _record_applied(conn: Connection, job: Ingestion, received: ReceivedFile, content_sha: str) -> None:
    """The file's row, applied (unless the same content was applied already for its département)."""
    ft = T_FILES
    report = job.report
    same = conn.execute(
        select(ft.c.id).where(
            ft.c.departement_code == job.departement,
            ft.c.content_sha256 == content_sha,
            ft.c.status == "applied",
        )
    ).first()
    if same is not None:
        raise _Duplicate(same[0])
    report.file_id = job.file_id
    report.duration_ms = received.elapsed_ms()
    conn.execute(
        update(ft)
        .where(ft.c.id == job.file_id)
        .values(
            status="applied",
            content_sha256=content_sha,
            foyers=report.foyers,
            persons=report.persons_brsa,
            warnings=report.warnings_count,
            rejected_records=report.rejected_count,
            duration_ms=report.duration_ms,
            report=report.to_dict(),
        )
    )


def _log_applied(report: IngestReport) -> None:
    log.info(
        "flux_applied",
        file_id=report.file_id,
        departement=report.departement,
        foyers=report.foyers,
        persons=report.persons_brsa,
        new_persons=report.new_persons,
        state_changes=report.state_changes,
        warnings=report.warnings_count,
        rejected=report.rejected_count,
        duration_ms=report.duration_ms,
    )


def _rematch_webhooks(settings: Settings, report: IngestReport) -> None:
    """Partners' events received for persons unknown then (app.integrations.rdv_insertion.webhooks): this file may have
    brought them. After the commit; if it fails, they stay waiting for the next file."""

    if report.departement is None:
        return
    try:
        report.webhook_events_matched = rematch(settings, report.departement)
    except SQLAlchemyError as exc:
        log.error("webhook_rematch_failed", file_id=report.file_id, error_type=type(exc).__name__)


def _apply_pending_events(settings: Settings, report: IngestReport) -> None:
    """Orientation events kept aside while their person was unknown (CSV rows, `POST /api/v1/events`): this
    file may have brought them (app.orientation.arrivals). After the commit; if it fails, they stay pending
    for the next file."""

    if report.departement is None:
        return
    started = time.perf_counter()
    try:
        report.pending_events_applied = apply_pending(settings, report.departement)
    except Exception as exc:  # the file is committed: its report stands, the events wait
        log.error("pending_events_failed", file_id=report.file_id, error_type=type(exc).__name__)
    report.pending_events_ms = int((time.perf_counter() - started) * 1000)


def _apply_queued_events(settings: Settings, report: IngestReport) -> None:
    """Events posted while this file held SQLite's writer, kept aside (app.orientation.aside): applied now,
    in arrival order. If it fails, the next event post or the server's start applies them."""
    try:
        aside.drain(settings)
    except Exception as exc:  # the file is committed: its report stands, the events wait
        log.error("queued_events_failed", file_id=report.file_id, error_type=type(exc).__name__)


def refresh_after_commit(engine: Engine, report: IngestReport, progress: Callable[[int, int], None] | None) -> None:
    """The file is committed; bring the entry episodes of the persons it changed up to date. If this fails
    (database gone, busy beyond the timeout), the file stays applied and its persons stay queued: the
    report says so and what to re-run, and the next refresh (any writer's, or `passerelle episodes
    refresh`) takes them."""

    started = time.perf_counter()
    try:
        report.episodes_refreshed = refresh_pending(engine, progress)
    except (SQLAlchemyError, OSError) as exc:
        report.episodes_error = (
            f"updating the entry episodes after the commit failed ({type(exc).__name__}): the file stays applied "
            "and its persons stay queued; run `passerelle episodes refresh`"
        )
        log.error("episodes_refresh_failed", file_id=report.file_id, error_type=type(exc).__name__)
    report.episodes_ms = int((time.perf_counter() - started) * 1000)


class _Duplicate(Exception):
    def __init__(self, file_id: int) -> None:
        super().__init__(file_id)
        self.file_id = file_id


def _start(
    conn: Connection,
    job: Ingestion,
    received: ReceivedFile,
    header: FluxHeader | None,
    first: Prepared | None,
    report: IngestReport,
) -> None:
    """Once the header (and the first foyer) is known: the file's département, its lock, the file's row;
    check the options against the file."""
    assert header is not None
    options = received.options
    fonorg, numorg = _organisme_of(header, first)
    report.organisme = " ".join(x for x in (fonorg, numorg) if x) or None
    report.type_flux = header.type_flux
    report.created_at_caf = header.created_at.isoformat()
    report.initial_stock = options.initial_stock
    dep = _departement_of(conn, options, first)
    lock_departement(conn, dep)
    # Again under the lock: the same file applied meanwhile (two copies of one command at once) is a
    # duplicate, not a second initial stock refused as a wrong option. The file's row comes after the lock:
    # the ids of a département's files are in the order they were applied (app.persons.order).
    if (dup := _duplicate_in(conn, received, dep)) is not None:
        raise _Duplicate(dup)
    job.begin(header, dep, fonorg, numorg, _insert_applying(conn, received, "D"))
    report.departement = dep
    _ensure_departement(conn, dep)
    if header.created_at.date() > options.received_on:
        raise IngestInputError(
            f"the reception date {options.received_on} is before the file's creation date {header.created_at.date()}"
        )
    _check_initial_stock(conn, header, dep, fonorg, options, report)
    ft = T_FILES.c
    conn.execute(
        update(T_FILES)
        .where(ft.id == job.file_id)
        .values(
            departement_code=dep,
            applieme=header.applieme,
            fonorg=fonorg,
            numorg=numorg,
            type_flux=header.type_flux,
            created_at_caf=job.created_at,
            dtref=header.dtref,
        )
    )


def _departement_of(conn: Connection, options: IngestOptions, first: Prepared | None) -> str:
    """The département given, else the file's (its first foyer's), else the only one served."""
    file_dep = first.departement if first is not None else None
    dep = options.departement
    if dep is None:
        if file_dep and DEPARTEMENT_RE.match(file_dep):
            return file_dep
        known = conn.execute(select(T_DEPARTEMENTS.c.code)).scalars().all()
        if len(known) != 1:
            raise IngestInputError("cannot tell the département of this file (no foyer): give it with --departement")
        return str(known[0])
    if file_dep and file_dep != dep:
        raise FluxRejected(
            f"this file is for département {file_dep[:3]!r}, not {dep}",
            f"foyer 1 (line {first.line if first else 0})",
            "other_departement",
        )
    return dep


def _ensure_departement(conn: Connection, dep: str) -> None:
    if conn.execute(select(T_DEPARTEMENTS.c.code).where(T_DEPARTEMENTS.c.code == dep)).first() is None:
        conn.execute(insert(T_DEPARTEMENTS).values(code=dep, created_at=datetime.now(UTC)))


def _check_initial_stock(
    conn: Connection, header: FluxHeader, dep: str, fonorg: str | None, options: IngestOptions, report: IngestReport
) -> None:
    """--initial-stock is the first load of a monthly or reprise file; a first file without it is said."""
    ft = T_FILES.c
    earlier = conn.execute(
        select(func.count())
        .select_from(T_FILES)
        .where(ft.departement_code == dep, ft.status == "applied", ft.fonorg == fonorg, ft.nature == "D")
    ).scalar_one()
    if options.initial_stock:
        if header.type_flux == "I":
            raise IngestInputError("--initial-stock applies to a monthly (M) or reprise (R) file, not a daily one")
        if earlier:
            raise IngestInputError(
                f"département {dep} already has {earlier} applied file(s) from {fonorg}: "
                "the initial stock is the first load"
            )
    elif not earlier:
        report.warn(
            "no_initial_stock",
            f"first file from {fonorg} for département {dep} without --initial-stock: "
            "everyone in it who meets the criteria counts as a nouvel entrant",
        )


def _insert_applying(conn: Connection, received: ReceivedFile, nature: str) -> int:
    """The file's row while it is being applied (inside its transaction: gone if it fails)."""
    ft = T_FILES
    options = received.options
    return int(
        conn.execute(
            insert(ft)
            .values(
                filename=received.name[:255],
                size_bytes=received.size,
                file_sha256=received.sha256,
                status="applying",
                nature=nature,
                received_on=options.received_on,
                initial_stock=options.initial_stock and nature == "D",
                ingested_by=options.ingested_by,
                started_at=datetime.now(UTC),
                report={},
            )
            .returning(ft.c.id)
        ).scalar_one()
    )


def _instruction_file(engine: Engine, settings: Settings, received: ReceivedFile, report: IngestReport) -> IngestReport:
    try:
        return _ingest_instruction(engine, settings, received, report)
    except _Duplicate as dup_exc:
        return _duplicate_report(received, dup_exc.file_id, nature="I")
    except FluxRejected as exc:
        return _record_rejection(engine, settings, received, report, exc)


def _ingest_instruction(
    engine: Engine, settings: Settings, received: ReceivedFile, report: IngestReport
) -> IngestReport:
    """An instruction flux, in one transaction like a beneficiary file (app.flux.instruction)."""

    options = received.options
    report.nature = "I"
    if options.initial_stock:
        raise IngestInputError("--initial-stock applies to a beneficiary flux, not to an instruction flux")
    reader = InstructionReader(received.path, settings.hmac_key, FluxLimits.of(settings))
    ft = T_FILES
    with engine.begin() as conn:
        begin_ingestion(conn)

        def file_row(dep: str) -> int:
            """The file is read, its département known: checked, locked, then the file's row."""
            if options.departement is not None and dep != options.departement:
                raise IngestInputError(f"this file is for département {dep}, not {options.departement}")
            if not DEPARTEMENT_RE.match(dep):
                raise FluxRejected(f"invalid département {dep!r} (IDEPARTE)", None, "other_departement")
            lock_departement(conn, dep)
            return _insert_applying(conn, received, "I")

        outcome = apply_instruction(conn, reader, file_row, options.departement, options.received_on)
        assert reader.header is not None and outcome.departement is not None and outcome.file_id is not None
        dep = outcome.departement
        file_id = outcome.file_id
        _ensure_departement(conn, dep)
        conn.execute(update(T_INSTRUCTION).where(T_INSTRUCTION.c.file_id == file_id).values(departement_code=dep))
        same = conn.execute(
            select(ft.c.id).where(
                ft.c.departement_code == dep, ft.c.content_sha256 == reader.content_sha256, ft.c.status == "applied"
            )
        ).first()
        if same is not None:
            raise _Duplicate(same[0])
        report.file_id = file_id
        report.departement = dep
        report.type_flux = reader.header.type_flux
        report.created_at_caf = reader.header.created_at.isoformat()
        report.foyers = outcome.demands
        report.persons_brsa = outcome.persons
        report.instruction_attached = outcome.attached
        report.instruction_kept_aside = outcome.kept_aside
        for severity, code, message in outcome.problems:
            (report.warn if severity == WARNING else report.reject)(code, message)
        report.duration_ms = received.elapsed_ms()
        conn.execute(
            update(ft)
            .where(ft.c.id == file_id)
            .values(
                departement_code=dep,
                status="applied",
                content_sha256=reader.content_sha256,
                applieme=reader.header.applieme,
                type_flux=reader.header.type_flux,
                created_at_caf=reader.header.created_at.replace(tzinfo=UTC),
                foyers=outcome.demands,
                persons=outcome.persons,
                warnings=report.warnings_count,
                rejected_records=report.rejected_count,
                duration_ms=report.duration_ms,
                report=report.to_dict(),
            )
        )
        _audit_in(conn, options, report)
    log.info(
        "instruction_flux_applied",
        file_id=file_id,
        departement=dep,
        demands=outcome.demands,
        persons=outcome.persons,
        attached=outcome.attached,
        kept_aside=outcome.kept_aside,
        contact_problems=outcome.contact_problems,
    )
    return report


def _record_rejection(
    engine: Engine, settings: Settings, received: ReceivedFile, report: IngestReport, exc: FluxRejected
) -> IngestReport:
    # A parser's message may quote hundreds of bytes of the file (lxml repeats a broken start tag): bounded,
    # so that the rejection is always recorded (the column holds 1,000 characters) and stays readable.
    options = received.options
    name = received.name
    reason = exc.reason if len(exc.reason) <= MAX_REASON else exc.reason[: MAX_REASON - 1] + "…"
    rejected = IngestReport(
        status="rejected",
        filename=name,
        received_on=options.received_on.isoformat(),
        departement=options.departement or report.departement or _file_departement(exc.departement),
        organisme=report.organisme,
        type_flux=report.type_flux,
        initial_stock=options.initial_stock,
        foyers=max(report.foyers, exc.foyers_read),
        error_code=exc.code,
        error=reason,
        error_position=exc.position,
        duration_ms=received.elapsed_ms(),
    )
    # The copy holds NIRs in clear: mode 600 in a directory mode 700 (docs/operations.md, retention).
    quarantine = private_dir(settings.data_dir / "quarantine")
    target = quarantine / f"{received.sha256[:12]}-{Path(name).name}"
    try:
        copy_private(received.path, target)
        rejected.quarantine_path = str(target)
    except OSError as copy_exc:
        log.error("quarantine_copy_failed", error_type=type(copy_exc).__name__)
    write_private_text(quarantine / f"{target.name}.report.json", _json(rejected.to_dict()))
    with engine.begin() as conn:
        dep = rejected.departement
        if (
            dep is not None
            and conn.execute(select(T_DEPARTEMENTS.c.code).where(T_DEPARTEMENTS.c.code == dep)).first() is None
        ):
            dep = None
        rejected.file_id = conn.execute(
            insert(T_FILES)
            .values(
                departement_code=dep,
                filename=name[:255],
                size_bytes=received.size,
                file_sha256=received.sha256,
                status="rejected",
                error_code=exc.code,
                error=(reason + (f" (at {exc.position})" if exc.position else ""))[:1000],
                received_on=options.received_on,
                initial_stock=options.initial_stock,
                ingested_by=options.ingested_by,
                started_at=datetime.now(UTC),
                duration_ms=rejected.duration_ms,
                quarantine_path=rejected.quarantine_path,
                report=rejected.to_dict(),
            )
            .returning(T_FILES.c.id)
        ).scalar_one()
        _audit_in(conn, options, rejected)
    log.warning("flux_rejected", file_id=rejected.file_id, error_code=exc.code, position=exc.position)
    return rejected


def _file_departement(value: str | None) -> str | None:
    """The département a rejected file's first foyer named (IDEPARTE may carry more than 3 characters)."""
    code = (value or "")[:3]
    return code if DEPARTEMENT_RE.match(code) else None


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, default=str)
