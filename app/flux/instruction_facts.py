"""What the instruction flux says of a person (app.flux.instruction): for the person's page, and the
contacts France Travail's weekly file may use — only those the person consented to (`A`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from app.models import InstructionRecord

ACCEPTED = "A"


def _latest(person_id: Any) -> Any:  # an id, or a bindparam
    return (
        select(InstructionRecord)
        .where(InstructionRecord.person_id == person_id)
        .order_by(
            InstructionRecord.received_on.desc(),
            InstructionRecord.file_created_at.desc(),
            InstructionRecord.file_id.desc(),
            InstructionRecord.seq.desc(),
        )
        .limit(1)
    )


_LATEST = _latest(bindparam("person_id"))


def for_person(session: Session, person_id: int) -> dict[str, Any] | None:
    """The latest instruction record of a person, as the person's page shows it (persons:read)."""
    # a row, no ORM object; the statement built once (issue #27)
    r = session.connection().execute(_LATEST, {"person_id": person_id}).first()
    if r is None:
        return None
    return {
        "recu_le": r.received_on,
        "fichier": r.file_id,
        "statut_demande": r.statut_demande,
        "contacts": {
            "telephone": r.telephone,
            "telephone_nature": r.telephone_nature,
            "telephone_materiel": r.telephone_materiel,
            "telephone_consentement": r.telephone_consent,
            "courriel": r.email,
            "courriel_consentement": r.email_consent,
            "anomalies": r.contact_problems,
        },
        "suivi_appui_orientation": r.suivi,
        "parcours": {
            "calcule": r.parcours_calcule,
            "modifie": r.parcours_modifie,
            "refuse": r.parcours_refuse,
            "motif_modification": r.parcours_motif,
        },
        "dsp": r.dsp,
    }


def france_travail_contacts(conn: Connection, person_id: int) -> dict[str, str | None]:
    """The telephone and e-mail the weekly France Travail file may carry: each only where the person's
    latest instruction record says it may be used (`A`); otherwise empty."""
    t = InstructionRecord
    r = conn.execute(
        _latest(person_id).with_only_columns(t.telephone, t.telephone_consent, t.email, t.email_consent)
    ).first()
    if r is None:
        return {"telephone": None, "courriel": None}
    return {
        "telephone": r.telephone if r.telephone_consent == ACCEPTED else None,
        "courriel": r.email if r.email_consent == ACCEPTED else None,
    }
