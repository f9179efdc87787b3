"""Received flux files and what they say about each person, dated by the day the Département received them."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Date, ForeignKey, Index, Integer, SmallInteger, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow

BigId = BigInteger().with_variant(Integer(), "sqlite")


class FluxFile(Base):
    """One received CAF/MSA file: applied, rejected (and quarantined) or recognised as a duplicate."""

    __tablename__ = "flux_files"
    __table_args__ = (
        Index("ix_flux_files_departement_received", "departement_code", "received_on"),
        # The same content is applied at most once per département.
        Index(
            "uq_flux_files_applied_content",
            "departement_code",
            "content_sha256",
            unique=True,
            sqlite_where=text("status = 'applied'"),
            postgresql_where=text("status = 'applied'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    departement_code: Mapped[str | None] = mapped_column(ForeignKey("departements.code"))
    filename: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    file_sha256: Mapped[str] = mapped_column(String(64), index=True)
    content_sha256: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # applied | rejected
    error_code: Mapped[str | None] = mapped_column(String(40))
    error: Mapped[str | None] = mapped_column(String(1000))
    applieme: Mapped[str | None] = mapped_column(String(10))
    fonorg: Mapped[str | None] = mapped_column(String(3))
    numorg: Mapped[str | None] = mapped_column(String(3))
    type_flux: Mapped[str | None] = mapped_column(String(1))
    # NATFLUX: D beneficiary flux, I instruction flux (contacts, DSP, parcours; app.flux.instruction)
    nature: Mapped[str] = mapped_column(String(1), server_default="D")
    created_at_caf: Mapped[datetime | None] = mapped_column(UTCDateTime())
    dtref: Mapped[date | None] = mapped_column(Date)
    received_on: Mapped[date] = mapped_column(Date)
    initial_stock: Mapped[bool] = mapped_column(Boolean, default=False)
    foyers: Mapped[int] = mapped_column(Integer, default=0)
    persons: Mapped[int] = mapped_column(Integer, default=0)
    warnings: Mapped[int] = mapped_column(Integer, default=0)
    rejected_records: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    ingested_by: Mapped[str | None] = mapped_column(String(120))
    quarantine_path: Mapped[str | None] = mapped_column(String(500))
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Person(Base):
    """A person known from the flux (roles DEM/CJT only: the BRSA who can be subject to droits et devoirs).

    The NIR is stored encrypted (`nir_encrypted`) and found through its keyed hash (`nir_hash`).
    """

    __tablename__ = "persons"
    __table_args__ = (Index("ix_persons_departement_nir_hash", "departement_code", "nir_hash"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    departement_code: Mapped[str] = mapped_column(String(3))
    nir_hash: Mapped[str | None] = mapped_column(String(64))
    nir_encrypted: Mapped[str | None] = mapped_column(String(120))
    qual: Mapped[str | None] = mapped_column(String(3))
    nom: Mapped[str | None] = mapped_column(String(100))
    nomnai: Mapped[str | None] = mapped_column(String(100))
    prenom: Mapped[str | None] = mapped_column(String(100))
    date_naissance: Mapped[date | None] = mapped_column(Date)
    sexe: Mapped[str | None] = mapped_column(String(1))
    stock: Mapped[bool] = mapped_column(Boolean, default=False)
    first_file_id: Mapped[int] = mapped_column(Integer)
    first_received_on: Mapped[date] = mapped_column(Date)
    updated_file_id: Mapped[int] = mapped_column(Integer)


class PersonKey(Base):
    """A key that identifies a person across files (keyed hash of organisme+matricule+role, NUMDEMRSA+role,
    names+birth date). The NIR, the strongest key, is found through `persons.nir_hash` instead.

    No surrogate id: the key itself is the primary key (on SQLite, the table is that index, WITHOUT ROWID).
    A 500,000-person file writes ~850,000 keys; the id's sequence and index were a third of their cost.
    """

    __tablename__ = "person_keys"
    __table_args__ = ({"sqlite_with_rowid": False},)

    departement_code: Mapped[str] = mapped_column(String(3), primary_key=True)
    value: Mapped[str] = mapped_column(String(32), primary_key=True)  # 128-bit keyed hash, hex
    kind: Mapped[str] = mapped_column(String(12))  # matricule | numdemrsa | identity
    person_id: Mapped[int] = mapped_column(BigId, index=True)


class AmbiguousKey(Base):
    """A key two persons carried (told apart by NIR, or by names and birth date): a matricule + role, a
    NUMDEMRSA + role or names + birth date. It identifies neither of them, from the file where it was seen
    on both, whatever order files arrive in; it is not a `person_keys` row any more."""

    __tablename__ = "ambiguous_keys"
    __table_args__ = ({"sqlite_with_rowid": False},)

    departement_code: Mapped[str] = mapped_column(String(3), primary_key=True)
    value: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(12))
    file_id: Mapped[int] = mapped_column(Integer)  # the file where it was found shared


class IdentityMatch(Base):
    """A record joined to a known person by names and birth date alone (no NIR, matricule or demand number
    in common), kept for an operator to review (`passerelle persons identity-matches`) and, if wrong, to
    undo (`passerelle persons split`). Positions and keyed hashes only: never a name, a NIR or a birth date.

    `status`: `open`, or `split` once undone (the foyer's states from that file on moved to
    `split_person_id`, and the identity key recorded in `ambiguous_keys` so that the two are never joined
    again by it)."""

    __tablename__ = "identity_matches"
    __table_args__ = (
        Index("ix_identity_matches_departement", "departement_code", "status"),
        Index("ix_identity_matches_person", "person_id"),
        Index("ix_identity_matches_file", "file_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    departement_code: Mapped[str] = mapped_column(String(3))
    person_id: Mapped[int] = mapped_column(BigInteger)
    file_id: Mapped[int] = mapped_column(Integer)
    received_on: Mapped[date] = mapped_column(Date)  # the file's reception date: the match's date
    foyer_position: Mapped[int] = mapped_column(Integer)  # the foyer's rank in the file
    person_position: Mapped[int] = mapped_column(Integer)  # the person's rank in the foyer
    fonorg: Mapped[str | None] = mapped_column(String(3))
    numorg: Mapped[str | None] = mapped_column(String(3))
    matricule: Mapped[str | None] = mapped_column(String(15))
    role: Mapped[str | None] = mapped_column(String(3))
    identity_key: Mapped[str] = mapped_column(String(32))  # the names + birth date key (keyed hash)
    record_keys: Mapped[list[str]] = mapped_column(JSON)  # the record's other keys (keyed hashes)
    brought_nir: Mapped[bool] = mapped_column(Boolean)  # the record gave the person the NIR it lacked
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    status: Mapped[str] = mapped_column(String(8), default="open")  # open | split
    split_person_id: Mapped[int | None] = mapped_column(BigInteger)
    split_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    split_by: Mapped[str | None] = mapped_column(String(120))
    split_reason: Mapped[str | None] = mapped_column(String(300))


class PersonState(Base):
    """What one file says about one person, stored only when it differs from the state in force before.

    `received_on` dates it (the annex-4 T0 is a reception date); `present = False` records that the person
    left the foyer or was absent from a full (monthly) file of the organisme that last carried them.
    """

    __tablename__ = "person_states"
    __table_args__ = (
        Index("ix_person_states_person_received", "person_id", "received_on"),
        Index("ix_person_states_departement_received", "departement_code", "received_on"),
        Index("ix_person_states_matricule", "departement_code", "matricule"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    person_id: Mapped[int] = mapped_column(BigId)
    # Not indexed: states are read by person, never by file (an index here cost ~10 % of their writes).
    file_id: Mapped[int] = mapped_column(Integer)
    departement_code: Mapped[str] = mapped_column(String(3))
    received_on: Mapped[date] = mapped_column(Date)
    file_created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    seq: Mapped[int] = mapped_column(Integer)  # order within the file (ties on the same reception date)
    present: Mapped[bool] = mapped_column(Boolean)
    absence_reason: Mapped[str | None] = mapped_column(String(24))
    type_flux: Mapped[str] = mapped_column(String(1))
    fonorg: Mapped[str | None] = mapped_column(String(3))
    numorg: Mapped[str | None] = mapped_column(String(3))
    matricule: Mapped[str | None] = mapped_column(String(15))
    numdemrsa: Mapped[str | None] = mapped_column(String(11))
    dtdemrsa: Mapped[date | None] = mapped_column(Date)
    role: Mapped[str | None] = mapped_column(String(3))
    etat: Mapped[str | None] = mapped_column(String(2))
    sdd: Mapped[bool | None] = mapped_column(Boolean)
    sdd_entrant: Mapped[bool | None] = mapped_column(Boolean)
    suspension_versement_motifs: Mapped[str | None] = mapped_column(String(60))
    suspension_versement_since: Mapped[date | None] = mapped_column(Date)
    suspension_droit_motifs: Mapped[str | None] = mapped_column(String(60))
    suspension_droit_since: Mapped[date | None] = mapped_column(Date)
    closure_motif: Mapped[str | None] = mapped_column(String(3))
    closure_date: Mapped[date | None] = mapped_column(Date)
    transfer_in_from: Mapped[str | None] = mapped_column(String(10))
    transfer_in_date: Mapped[date | None] = mapped_column(Date)
    transfer_out_to: Mapped[str | None] = mapped_column(String(10))
    transfer_out_date: Mapped[date | None] = mapped_column(Date)
    numcom: Mapped[str | None] = mapped_column(String(5))
    codepos: Mapped[str | None] = mapped_column(String(5))
    nomcom: Mapped[str | None] = mapped_column(String(60))
    adresse: Mapped[str | None] = mapped_column(String(200))
    sitfam: Mapped[str | None] = mapped_column(String(3))
    ddnatdro: Mapped[date | None] = mapped_column(Date)
    refusal_motif: Mapped[str | None] = mapped_column(String(3))  # Refus/MOTIREFURSA (e.g. DSD)
    refusal_date: Mapped[date | None] = mapped_column(Date)  # Refus/DTREFURSA
    pays: Mapped[str | None] = mapped_column(String(3))  # an address abroad only (PAYS)
    idassedic: Mapped[str | None] = mapped_column(String(20))
    death_date: Mapped[date | None] = mapped_column(Date)  # DTDC (VRSD0301)
    fingerprint: Mapped[str] = mapped_column(String(32))


class FluxObservation(Base):
    """Every person record of every applied file, stored state row or not: what the file said of the
    person (by the fingerprint of that state, whose values are in one of the person's state rows), in which
    foyer, and which blocks the record lacked. Unchanged records get no state row; these rows let an
    earlier-dated file that arrives late re-examine what followed it (app.flux.replay), so the stored facts
    do not depend on the order files arrive in. `seq` is the record's rank in its file, as in its state row."""

    __tablename__ = "flux_observations"
    __table_args__ = (Index("ix_flux_observations_person", "person_id"),)

    file_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(BigInteger)
    fonorg: Mapped[str | None] = mapped_column(String(3))
    numorg: Mapped[str | None] = mapped_column(String(3))
    matricule: Mapped[str | None] = mapped_column(String(15))
    fingerprint: Mapped[str] = mapped_column(String(32))
    missing_blocks: Mapped[int] = mapped_column(SmallInteger)
    sdd_entrant: Mapped[bool | None] = mapped_column(Boolean)


class FoyerEvent(Base):
    """An event (FG) a daily file gives as the cause of a foyer's record."""

    __tablename__ = "foyer_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("flux_files.id"), index=True)
    departement_code: Mapped[str] = mapped_column(String(3))
    fonorg: Mapped[str | None] = mapped_column(String(3))
    numorg: Mapped[str | None] = mapped_column(String(3))
    matricule: Mapped[str | None] = mapped_column(String(15))
    dtliq: Mapped[date | None] = mapped_column(Date)
    fg: Mapped[str] = mapped_column(String(12))


class AccessRecord(Base):
    """One read of a person's data: who, which person, when, through which endpoint (the audit builds on it).

    On SQLite this table lives in the audit journal, a second file attached as `audit` (app.db): readers
    write it without ever waiting for the main file's writer. No foreign key: the trail outlives what it
    names."""

    __tablename__ = "access_records"
    __table_args__ = (
        Index("ix_access_records_person", "person_id", "at"),
        Index("ux_access_records_seq", "seq", unique=True),
        Index("ux_access_records_proof", "proof", unique=True),
        Index(
            "ix_access_records_unsealed", "id", sqlite_where=text("seq IS NULL"), postgresql_where=text("seq IS NULL")
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    principal_id: Mapped[str] = mapped_column(String(120))
    agent_identifiant: Mapped[str | None] = mapped_column(String(100))
    departement_code: Mapped[str] = mapped_column(String(3))
    person_id: Mapped[int | None] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(40))
    endpoint: Mapped[str] = mapped_column(String(200))
    request_id: Mapped[str | None] = mapped_column(String(64))
    found: Mapped[bool] = mapped_column(Boolean, default=True)
    purpose: Mapped[str | None] = mapped_column(String(200))  # X-Purpose, as the caller gave it
    source_address: Mapped[str | None] = mapped_column(String(64))
    # What came of it (ok, not_found, refused, rejected, error) and, for an action, its counts or file id:
    # never a NIR, a name or a contact (app.audit.chain.record_action).
    outcome: Mapped[str | None] = mapped_column(String(20))
    detail: Mapped[str | None] = mapped_column(String(500))
    # The seal (app.audit.chain): a gapless number and an HMAC chained to the previous event's,
    # set once by the sealer; on PostgreSQL a trigger refuses any other update and any deletion of a
    # recent event (migration 0015).
    seq: Mapped[int | None] = mapped_column(BigInteger)
    key_id: Mapped[str | None] = mapped_column(String(20))
    mac: Mapped[str | None] = mapped_column(String(64))
    # Proof that the service wrote it, made as it is written (app.audit.proof, migration 0021): key id,
    # nonce and HMAC of the content; the sealer never seals an event without a valid one. Empty on the
    # events written before 0021 (already sealed, or sealed as legacy: docs/decisions.md).
    proof: Mapped[str | None] = mapped_column(String(120))


class AuditChain(Base):
    """The chain's state, one row: the last sealed event (`head_*`) and where the chain starts after a purge
    of old events (`base_*`: the last purged event's number and seal; 0 and empty before any purge)."""

    __tablename__ = "audit_chain"

    id: Mapped[int] = mapped_column(primary_key=True)
    head_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    head_mac: Mapped[str] = mapped_column(String(64), default="")
    base_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    base_mac: Mapped[str] = mapped_column(String(64), default="")
    # events up to this number were purged before leaf hashes were kept (migration 0022): placeholder leaves
    leaves_from: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # the size of the last checkpoint a server published (app.audit.checkpoint.CheckpointPublisher)
    published_size: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class AuditLeaf(Base):
    """The public hash of a purged audit event (its leaf in the checkpoints' Merkle tree, app.audit.checkpoint):
    the purge deletes the event and keeps this, so the checkpoints signed before still verify. A hash of
    ids and times, no personal data."""

    __tablename__ = "audit_leaves"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    leaf: Mapped[str] = mapped_column(String(64))  # hex SHA-256(0x00 || the event's canonical JSON)


class InstructionRecord(Base):
    """What an instruction flux (VIRS0901, NATFLUX I) said of one person of a demand being instructed,
    dated by the file's reception: the demand's contacts and consents, the person's SuiviAppuiOrientation,
    computed/modified parcours and a summary of the DSP (codes only).

    `person_id` is empty while no beneficiary file has brought the person: the record keeps the person's
    identity keys (keyed hashes, never an identifier in clear) and is attached when one of them appears.
    Contacts are personal data: never logged; shown with the person to `persons:read`; given for France
    Travail only where the person consented (`A`).
    """

    __tablename__ = "instruction_records"
    __table_args__ = (
        Index("ix_instruction_records_person", "person_id"),
        Index("ix_instruction_records_departement", "departement_code", "person_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    departement_code: Mapped[str] = mapped_column(String(3))
    file_id: Mapped[int] = mapped_column(Integer)
    received_on: Mapped[date] = mapped_column(Date)
    file_created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    seq: Mapped[int] = mapped_column(Integer)
    person_id: Mapped[int | None] = mapped_column(BigInteger)
    keys: Mapped[list[str]] = mapped_column(JSON)  # the person's identity keys and NIR lookup hash
    role: Mapped[str | None] = mapped_column(String(3))
    statut_demande: Mapped[str | None] = mapped_column(String(2))  # STATUDEMRSA
    nationalite: Mapped[str | None] = mapped_column(String(3))  # Nationalite/NATI (F, C, A...) when given
    telephone: Mapped[str | None] = mapped_column(String(40))
    telephone_nature: Mapped[str | None] = mapped_column(String(3))  # NATTEL
    telephone_materiel: Mapped[str | None] = mapped_column(String(3))  # MATETEL
    telephone_consent: Mapped[str | None] = mapped_column(String(1))  # AUTORUTITEL: A accepted, I refused
    email: Mapped[str | None] = mapped_column(String(254))
    email_consent: Mapped[str | None] = mapped_column(String(1))  # AUTORUTIADRELEC
    contact_problems: Mapped[str | None] = mapped_column(String(100))  # kept as received, flagged
    suivi: Mapped[dict[str, Any]] = mapped_column(JSON)  # SuiviAppuiOrientation
    parcours_calcule: Mapped[str | None] = mapped_column(String(10))  # NATPARCOCAL
    parcours_modifie: Mapped[str | None] = mapped_column(String(10))  # NATPARCOMOD
    parcours_refuse: Mapped[bool | None] = mapped_column(Boolean)  # TOPREFUPARCO
    parcours_motif: Mapped[str | None] = mapped_column(String(10))  # MOTIMODPARCO
    dsp: Mapped[dict[str, Any]] = mapped_column(JSON)  # DonneesSocioProfessionnelles: codes only
