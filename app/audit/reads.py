"""The audit of reads: the access records a unit of work gathers (reads of personal data, actions) are
written last, just before it commits, by the hook this module registers with app.db (which imports no
domain)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.audit.proof import insert_events
from app.db import on_before_commit

PENDING_ACCESS = "pending_access_records"


def write_access_records(session: Session) -> None:
    """Insert the access records a unit of work gathered, last thing before its commit: on SQLite the audit
    journal's write lock is then held for the commit only, never while the request reads."""
    rows = session.info.pop(PENDING_ACCESS, None)
    if rows:
        insert_events(session, rows)  # each with its proof that the service wrote it


on_before_commit(write_access_records)
