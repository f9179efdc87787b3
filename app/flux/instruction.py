"""The instruction flux (VIRS0901, NATFLUX `I`): what the CAF sends while a demand is being instructed.

It is not a beneficiary flux and is never applied as one (`NATFLUX` is read first: `peek_nature`). Its
records (`InfoDemandeRSA`) give, for the persons of a demand: the demand's contacts (`ModesContacts`: the
telephone with its nature, the e-mail, and the consents to use them, `AUTORUTITEL` / `AUTORUTIADRELEC`:
`A` accepted, `I` refused), `SuiviAppuiOrientation`, the computed and modified parcours
(`Parcours/DeterminationParcours`) and the DSP (`DonneesSocioProfessionnelles`, kept as a summary of its
codes). Each person is matched like any record (NIR, then matricule + role, demand number + role, names +
birth date); a person no beneficiary file has brought yet is kept aside with their keys and attached when
one does (`attach_pending`, run by every beneficiary ingestion). Dated by the file's reception.

Contacts are personal data: never logged, never in a report (counts only). See docs/ingestion.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, cast

from lxml import etree
from sqlalchemy import Connection, Table, bindparam, insert, select, update

from app.db import one_of
from app.flux.derive import STATE_COLUMNS, Deriver, Prepared, PreparedPerson
from app.flux.envelope import (
    DOCTYPE_RE,
    GZIP_ERRORS,
    HEAD_BYTES,
    HEADER,
    ROOT,
    TRAILER,
    WARNING,
    FluxLimits,
    FluxRejected,
    HashingReader,
    count_of,
    gzip_truncated,
    open_flux,
    parse_header,
    peek_nature,
    safe_iterparse,
    too_deep,
)

__all__ = ["peek_nature"]  # re-exported: first defined here (app.flux.envelope now, light to import)
from app.flux.fields import RecordContext
from app.flux.reader import _person, _RawPerson
from app.flux.records import Address, FluxHeader, FoyerRecord
from app.models import AmbiguousKey, InstructionRecord, Person, PersonKey

DEMAND = "InfoDemandeRSA"
T_RECORDS = cast(Table, InstructionRecord.__table__)
T_KEYS = cast(Table, PersonKey.__table__)
T_PERSONS = cast(Table, Person.__table__)
T_AMBIGUOUS = cast(Table, AmbiguousKey.__table__)

SUIVI = ("TOPOBLSOCPRO", "TOPSOUHSOCPRO", "SITPERSSOCPRO", "DTENRSOCPRO", "DTENRPARCO", "DTENRORIE")
CONSENTS = frozenset({"A", "I"})
_PHONE_SEPARATORS = re.compile(r"[\s.\-/()]")
_PHONE = re.compile(r"^(?:0[1-9]\d{8}|\+\d{8,15}|00\d{8,15})$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PHONE_MAX, EMAIL_MAX = 40, 254
ROLE = STATE_COLUMNS.index("role")


@dataclass
class Contacts:
    telephone: str | None = None
    nature: str | None = None
    materiel: str | None = None
    telephone_consent: str | None = None
    email: str | None = None
    email_consent: str | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class InstructionPerson:
    prepared: PreparedPerson | None  # None: not a person of the RSA's droits et devoirs (child, other)
    suivi: dict[str, Any]
    parcours: dict[str, Any]
    dsp: dict[str, list[str]]
    nationalite: str | None = None  # Nationalite/NATI


@dataclass
class Demand:
    position: int
    line: int | None
    departement: str | None
    statut: str | None
    contacts: Contacts
    persons: list[InstructionPerson]
    problems: list[tuple[str, str, str]]


def _leaves(el: Any) -> dict[str, str | None]:
    return {child.tag: child.text for child in el.iter() if isinstance(child.tag, str) and len(child) == 0}


def _contacts(el: Any | None) -> Contacts:
    if el is None:
        return Contacts()
    leaf = _leaves(el)
    text = RecordContext.text
    found = Contacts(
        telephone=text(leaf.get("NUMTEL")),
        nature=text(leaf.get("NATTEL")),
        materiel=text(leaf.get("MATETEL")),
        telephone_consent=text(leaf.get("AUTORUTITEL")),
        email=text(leaf.get("ADRELEC")),
        email_consent=text(leaf.get("AUTORUTIADRELEC")),
    )
    # kept as received, flagged: never "corrected" silently (a report gives the flags, never the values)
    if found.telephone is not None:
        if len(found.telephone) > PHONE_MAX:
            found.problems.append("telephone too long: not stored")
            found.telephone = None
        elif not _PHONE.match(_PHONE_SEPARATORS.sub("", found.telephone)):
            found.problems.append("telephone malformed")
    if found.email is not None:
        if len(found.email) > EMAIL_MAX:
            found.problems.append("e-mail too long: not stored")
            found.email = None
        elif not _EMAIL.match(found.email):
            found.problems.append("e-mail malformed")
    for name, value in (("AUTORUTITEL", found.telephone_consent), ("AUTORUTIADRELEC", found.email_consent)):
        if value is not None and value not in CONSENTS:
            found.problems.append(f"{name} is neither A nor I: read as no consent")
    for name in ("nature", "materiel", "telephone_consent", "email_consent"):
        value = getattr(found, name)
        if value is not None and len(value) > (1 if "consent" in name else 3):
            found.problems.append(f"{name} longer than its code: not stored")
            setattr(found, name, None)
    return found


def _role(person: Any) -> str | None:
    for block in person.iter("Prestations"):
        if block.findtext("NATPREST") == "RSA":
            return cast(str | None, block.findtext("ROLEPERS"))
    for block in person.iter("FonctionPersonneRSA"):
        return cast(str | None, block.findtext("ROLEPERS"))
    return None


def _dsp(person: Any) -> dict[str, list[str]]:
    """The DSP's codes (education level, professional situation, mobility, housing, social difficulties),
    without its free texts (LIB*, COMM*: they may hold anything about the person)."""
    out: dict[str, list[str]] = {}
    for block in person.iter("DonneesSocioProfessionnelles"):
        for leaf in block.iter():
            if not isinstance(leaf.tag, str) or len(leaf) or leaf.tag.startswith(("LIB", "COMM")):
                continue
            value = (leaf.text or "").strip()
            if value and len(value) <= 10:
                out.setdefault(leaf.tag, []).append(value)
    return out


def _demand(el: Any, position: int, deriver: Deriver, dtref: date | None) -> Demand:
    ctx = RecordContext(position, el.sourceline)
    identification_rsa = el.find("IdentificationRSA")
    ident = _leaves(identification_rsa) if identification_rsa is not None else {}
    persons_raw = list(el.iter("Personne"))
    records = []
    extras = []
    for rank, p in enumerate(persons_raw, start=1):
        ctx.person = rank
        identification = p.find("Identification")
        raw = _RawPerson(p.sourceline, _leaves(identification) if identification is not None else {}, _role(p), {})
        records.append(_person(ctx, raw, rank, dtref))
        suivi_el = next(p.iter("SuiviAppuiOrientation"), None)
        suivi = {k: v for k, v in (_leaves(suivi_el) if suivi_el is not None else {}).items() if k in SUIVI and v}
        parcours_el = next(p.iter("DeterminationParcours"), None)
        parcours = _leaves(parcours_el) if parcours_el is not None else {}
        nationality = p.find("Nationalite")
        nati = _leaves(nationality).get("NATI") if nationality is not None else None
        extras.append((suivi, parcours, _dsp(p), (nati or "").strip()[:3] or None))
    ctx.person = None
    foyer = FoyerRecord(
        position=position,
        line=el.sourceline,
        fonorg=ctx.text(ident.get("FONORG")),
        numorg=ctx.text(ident.get("NUMORG")),
        matricule=ctx.text(ident.get("MATRICULE")),
        departement=ctx.text(ident.get("IDEPARTE")),
        numdemrsa=ctx.text(ident.get("NUMDEMRSA")),
        dtdemrsa=ctx.date(ident.get("DTDEMRSA"), "DTDEMRSA"),
        etat=None,
        suspensions_droit=[],
        suspensions_versement=[],
        closure_motif=None,
        closure_date=None,
        transfer_in_from=None,
        transfer_in_date=None,
        transfer_out_to=None,
        transfer_out_date=None,
        address=Address(),
        sitfam=None,
        ddnatdro=None,
        events=[],
        persons=records,
        problems=ctx.problems,
    )
    # keys, NIR lookup hash: the same as for a beneficiary record
    prepared = Prepared.named(deriver.prepare(foyer))
    by_position = {p.position: p for p in prepared.people}
    persons = [
        InstructionPerson(
            by_position.get(rank),
            suivi,
            {k: parcours.get(k) for k in ("NATPARCOCAL", "NATPARCOMOD", "TOPREFUPARCO", "MOTIMODPARCO")},
            dsp,
            nati,
        )
        for rank, (suivi, parcours, dsp, nati) in enumerate(extras, start=1)
    ]
    contacts = _contacts(next(el.iter("ModesContacts"), None))
    statut = ctx.text(ident.get("STATUDEMRSA"))
    return Demand(position, el.sourceline, foyer.departement, statut, contacts, persons, list(prepared.problems))


class InstructionReader:
    """Iterate an instruction flux's demands; the header is checked first, the trailer last (count of
    InfoDemandeRSA). Raises `FluxRejected`. Instruction files are a day's demands: each InfoDemandeRSA is
    read as a small subtree, then dropped."""

    def __init__(self, path: Path, hmac_key: bytes, limits: FluxLimits | None = None) -> None:
        self.path = path
        self.limits = limits or FluxLimits()
        self.deriver = Deriver(hmac_key)
        self.header: FluxHeader | None = None
        self.demands_read = 0
        self.content_sha256 = ""

    def __iter__(self) -> Iterator[Demand]:
        try:
            raw = open_flux(self.path)
        except OSError as exc:
            raise FluxRejected(f"cannot open the file: {exc.strerror}", None, "unreadable") from exc
        with raw:
            reader = HashingReader(raw, self.limits)
            try:
                yield from self._parse(reader)
            except GZIP_ERRORS as exc:
                raise gzip_truncated(exc, reader.bytes_read) from exc
            self.content_sha256 = reader.sha256

    def _parse(self, reader: HashingReader) -> Iterator[Demand]:
        head = reader.head(HEAD_BYTES)
        if not head.strip():
            raise FluxRejected("the file is empty", None, "empty")
        if DOCTYPE_RE.search(head):
            raise FluxRejected("a DTD or entity declaration is not allowed in a flux file", "prolog", "forbidden_dtd")
        context = safe_iterparse(reader, (HEADER, DEMAND, TRAILER, "InfosFoyerRSA"))
        declared: int | None = None
        try:
            for _event, el in context:
                parent = el.getparent()
                if parent is None or parent.tag != ROOT or parent.getparent() is not None:
                    raise FluxRejected(
                        f"<{el.tag}> must be a child of <{ROOT}>", f"line {el.sourceline}", "invalid_structure"
                    )
                if el.tag == HEADER:
                    self.header = parse_header(el)
                    if self.header.nat_flux != "I":
                        raise FluxRejected(
                            f"NATFLUX {self.header.nat_flux!r} is not an instruction flux", HEADER, "other_nature"
                        )
                elif self.header is None:
                    raise FluxRejected(
                        "the header IdentificationFlux is missing", f"line {el.sourceline}", "missing_header"
                    )
                elif el.tag == DEMAND:
                    if declared is not None:
                        raise FluxRejected(
                            f"<{DEMAND}> after the trailer", f"line {el.sourceline}", "invalid_structure"
                        )
                    self.demands_read += 1
                    yield _demand(el, self.demands_read, self.deriver, self.header.dtref)
                elif el.tag == TRAILER:
                    declared = count_of(el, "NBTOTDOSRSATRANSM")
                    if declared is None:
                        raise FluxRejected("NBTOTDOSRSATRANSM is missing", f"line {el.sourceline}", "invalid_trailer")
                el.clear(keep_tail=False)
                while el.getprevious() is not None:
                    del parent[0]
                reader.record_freed()
        except etree.XMLSyntaxError as exc:
            deep = too_deep(exc)
            if deep is not None:
                raise deep from exc
            line = exc.position[0] if exc.position else exc.lineno
            msg = str(exc.msg or exc).split(", line")[0]
            lowered = msg.lower()
            truncated = reader.eof or "end of data" in lowered or "premature" in lowered
            code = "truncated" if truncated else "malformed_xml"
            raise FluxRejected(
                f"the XML is {'truncated' if truncated else 'malformed'}: {msg} after demand {self.demands_read}",
                f"line {line}",
                code,
            ) from exc
        if self.header is None:
            raise FluxRejected("the header IdentificationFlux is missing", None, "missing_header")
        if declared is None:
            raise FluxRejected(
                f"the trailer TransmissionFlux is missing: the file is truncated after demand {self.demands_read}",
                "end of file",
                "truncated",
            )
        if declared != self.demands_read:
            raise FluxRejected(
                f"the trailer announces {declared} demands (NBTOTDOSRSATRANSM) but the file holds {self.demands_read}",
                TRAILER,
                "count_mismatch",
            )


# -- matching ----------------------------------------------------------------------------------


def _resolve(conn: Connection, departement: str, keys_per_record: list[list[str]]) -> list[int | None]:
    """The person each record's keys designate (the NIR first, then the other keys in their order; a key
    two persons carried designates nobody), or None."""
    values = sorted({k for keys in keys_per_record for k in keys})
    owner: dict[str, int] = {}
    ambiguous: set[str] = set()
    plain = [v for v in values if not v.startswith("nir:")]
    nirs = [v[4:] for v in values if v.startswith("nir:")]
    for start in range(0, len(plain), 5000):
        chunk = plain[start : start + 5000]
        ambiguous.update(
            conn.execute(
                select(T_AMBIGUOUS.c.value).where(
                    T_AMBIGUOUS.c.departement_code == departement, one_of(conn, T_AMBIGUOUS.c.value, chunk)
                )
            ).scalars()
        )
        for value, pid in conn.execute(
            select(T_KEYS.c.value, T_KEYS.c.person_id).where(
                T_KEYS.c.departement_code == departement, one_of(conn, T_KEYS.c.value, chunk)
            )
        ):
            owner[value] = pid
    for start in range(0, len(nirs), 5000):
        chunk = nirs[start : start + 5000]
        for nir_hash, pid in conn.execute(
            select(T_PERSONS.c.nir_hash, T_PERSONS.c.id).where(
                T_PERSONS.c.departement_code == departement, one_of(conn, T_PERSONS.c.nir_hash, chunk)
            )
        ):
            owner[f"nir:{nir_hash}"] = pid
    found: list[int | None] = []
    for keys in keys_per_record:
        nir = next((k for k in keys if k.startswith("nir:")), None)
        if nir is not None and nir in owner:
            found.append(owner[nir])
            continue
        found.append(
            next((owner[k] for k in keys if k in owner and k not in ambiguous and not k.startswith("nir:")), None)
        )
    return found


def attach_pending(conn: Connection, departement: str) -> int:
    """Instruction records kept aside (their person unknown then) attached to the persons beneficiary files
    have brought since. Returns how many were attached."""
    pending = conn.execute(
        select(T_RECORDS.c.id, T_RECORDS.c["keys"]).where(
            T_RECORDS.c.departement_code == departement, T_RECORDS.c.person_id.is_(None)
        )
    ).all()
    if not pending:
        return 0
    owners = _resolve(conn, departement, [list(keys) for _id, keys in pending])
    updates = [{"b_id": rid, "b_person": pid} for (rid, _keys), pid in zip(pending, owners, strict=True) if pid]
    if updates:
        conn.execute(
            update(T_RECORDS).where(T_RECORDS.c.id == bindparam("b_id")).values(person_id=bindparam("b_person")),
            updates,
        )
    return len(updates)


# -- applying a file ---------------------------------------------------------------------------


@dataclass
class InstructionOutcome:
    demands: int = 0
    persons: int = 0
    attached: int = 0  # matched to a known person
    kept_aside: int = 0  # waiting for a beneficiary file to bring them
    contact_problems: int = 0
    problems: list[tuple[str, str, str]] = field(default_factory=list)
    departement: str | None = None
    organisme: str | None = None
    file_id: int | None = None  # the file's row, once its département is known


def apply_instruction(
    conn: Connection,
    reader: InstructionReader,
    file_row: Callable[[str], int],
    departement: str | None,
    received_on: date,
) -> InstructionOutcome:
    """Read and store every demand's persons (inside the caller's transaction: all or nothing). Once the
    file is read and its département known, `file_row(département)` checks it, takes its lock and gives the
    file's row id (`out.file_id`), before anything is written."""
    out = InstructionOutcome(departement=departement)
    rows: list[dict[str, Any]] = []
    keys_per_record: list[list[str]] = []
    created_at: datetime | None = None
    for demand in reader:
        assert reader.header is not None
        created_at = reader.header.created_at.replace(tzinfo=UTC)
        _screen_demand(out, demand)
        identified = [p for p in demand.persons if p.prepared is not None and p.prepared.keys]
        if not identified:
            out.problems.append(
                (WARNING, "unidentifiable_demand", f"demand {demand.position}: no person to attach it to; skipped")
            )
            continue
        for person in identified:
            assert person.prepared is not None
            out.persons += 1
            keys = [f"nir:{v}" if kind == "nir" else v for kind, v in person.prepared.keys]
            keys_per_record.append(keys)
            rows.append(_record_row(demand, person, received_on, out.persons, keys))
    if out.departement is None:
        raise FluxRejected(
            "cannot tell the département of this file (no IDEPARTE): give it with --departement",
            None,
            "unknown_departement",
        )
    out.file_id = file_id = file_row(out.departement)
    if not rows:
        return out
    owners = _resolve(conn, out.departement, keys_per_record)
    for row, owner in zip(rows, owners, strict=True):
        row |= {
            "file_id": file_id,
            "departement_code": out.departement,
            "file_created_at": created_at,
            "person_id": owner,
        }
        if owner is None:
            out.kept_aside += 1
        else:
            out.attached += 1
    conn.execute(insert(T_RECORDS), rows)
    return out


def _screen_demand(out: InstructionOutcome, demand: Demand) -> None:
    """Count the demand, check its département (one per file) and keep its problems."""
    out.demands += 1
    dep = demand.departement[:3] if demand.departement else None
    if out.departement is None:
        out.departement = dep
    elif dep is not None and dep != out.departement:
        raise FluxRejected(
            f"demand {demand.position} is for département {dep!r}, not {out.departement}: an instruction file "
            "is for one département",
            f"line {demand.line}",
            "other_departement",
        )
    out.problems.extend(demand.problems)
    if demand.contacts.problems:
        out.contact_problems += 1
        out.problems.extend(
            (WARNING, "invalid_contact", f"demand {demand.position}: {p}") for p in demand.contacts.problems
        )


def _record_row(
    demand: Demand, person: InstructionPerson, received_on: date, seq: int, keys: list[str]
) -> dict[str, Any]:
    """The instruction record of one identified person of a demand (its file and owner are given after)."""
    assert person.prepared is not None
    c = demand.contacts
    refused = person.parcours.get("TOPREFUPARCO")
    return {
        "received_on": received_on,
        "seq": seq,
        "keys": keys,
        "role": person.prepared.state[ROLE],
        "statut_demande": (demand.statut or "")[:2] or None,
        "nationalite": person.nationalite,
        "telephone": c.telephone,
        "telephone_nature": c.nature,
        "telephone_materiel": c.materiel,
        "telephone_consent": c.telephone_consent,
        "email": c.email,
        "email_consent": c.email_consent,
        "contact_problems": "; ".join(c.problems)[:100] or None,
        "suivi": person.suivi,
        "parcours_calcule": (person.parcours.get("NATPARCOCAL") or "")[:10] or None,
        "parcours_modifie": (person.parcours.get("NATPARCOMOD") or "")[:10] or None,
        "parcours_refuse": None if refused is None else refused.strip() in ("1", "true"),
        "parcours_motif": (person.parcours.get("MOTIMODPARCO") or "")[:10] or None,
        "dsp": person.dsp,
    }
