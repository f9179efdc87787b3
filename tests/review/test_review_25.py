"""Review of issue #25 (legal deadline, contrat d'engagement, absences by RDV kind): each test shows a defect
found in review (SQLite and PostgreSQL: PASSERELLE_TEST_DATABASE_URL)."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select

from app.db import get_engine, session_scope
from app.models import OrientationEvent, PendingEvent
from app.orientation import pending
from app.orientation.episodes import refresh_pending
from app.orientation.references import PersonRef
from tests.support.clock import on_day
from tests.support.factories import ingest
from tests.support.fluxbuilder import NIR_A, foyer, person, write_flux

TODAY = date(2026, 12, 6)


@pytest.fixture
def day(db):
    return on_day(db, TODAY)


def _ingest(settings, tmp_path, received: date, foyers, **options):
    where = tmp_path / received.isoformat()
    where.mkdir()
    path = write_flux(where, foyers, type_flux="M" if options.get("initial_stock") else "I", day=received)
    assert ingest(settings, path, received, **options).status == "applied"


def test_a_pending_cer_dated_2025_kept_aside_before_the_refusal_is_applied_not_dropped(day, tmp_path):
    """A CER dated 2025 kept aside (its person not known yet) before the service refused CER/PPAE dated since
    2025 is the contract the person signed: commit 12d8985 keeps the recorded ones answering the contract
    clock; the pending one must not be dropped when its person arrives."""
    with session_scope(day, write=True) as s:
        _row, status = pending.keep(
            s,
            day,
            "055",
            PersonRef(nir13=NIR_A[:13]),
            {"type": "contrat", "date": "2025-03-20", "contrat": "CER"},
            source="api",
            recorded_by="test",
        )
        assert status == pending.PENDING
    _ingest(day, tmp_path, date(2025, 3, 1), [foyer(person(NIR_A))])
    refresh_pending(get_engine(day))
    with session_scope(day) as s:
        kept = s.scalar(select(PendingEvent))
        assert kept.status == pending.APPLIED, kept.reason
        ev = s.scalar(select(OrientationEvent).where(OrientationEvent.type == "contrat"))
        assert (ev.event_date, ev.contrat_type) == (date(2025, 3, 20), "CER")
