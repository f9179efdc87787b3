"""Streaming, hardened reader of CAF/MSA flux files (VRSB0801, and the VRSD0301 revision as a mapping).

The file is read once, as a stream (lxml `iterparse`, each foyer cleared once read), plain or gzip,
in whatever encoding its prolog declares. DTDs, entities and network access are refused. Problems that
make the file unreadable raise `FluxRejected` with the position; problems inside one record are attached
to that record for the loader's policy (see docs/ingestion.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from lxml import etree

from app.flux.envelope import (
    DOCTYPE_RE,
    FOYER,
    GZIP_ERRORS,
    HEAD_BYTES,
    HEADER,
    REJECT_FOYER,
    REJECT_PERSON,
    ROOT,
    TRAILER,
    WARNING,
    FluxLimits,
    FluxRejected,
    HashingReader,
    check_prolog,
    check_top_level,
    count_of,
    gzip_truncated,
    nature_message,
    open_flux,
    parse_header,
    safe_iterparse,
    syntax_error,
)
from app.flux.fields import RecordContext
from app.flux.records import (
    BRSA_ROLES,
    ETATDOSRSA_CODES,
    FONORG_CODES,
    MISSING_ADMINISTRATIVE,
    MISSING_PRESTATION,
    MOTICLORSA_CODES,
    MOTISUSVERSRSA_CODES,
    ROLEPERS_CODES,
    SITFAM_CODES,
    Address,
    FluxHeader,
    FluxTrailer,
    FoyerRecord,
    PersonRecord,
    Suspension,
)
from app.security.nir import InvalidNir, normalize_nir

# Re-exported: the severities, the refusal and the envelope's names were first defined here.
__all__ = [
    "DOCTYPE_RE",
    "FOYER",
    "HEADER",
    "HEAD_BYTES",
    "REJECT_FOYER",
    "REJECT_PERSON",
    "ROOT",
    "TRAILER",
    "WARNING",
    "FluxLimits",
    "FluxReader",
    "FluxRejected",
    "open_flux",
    "safe_iterparse",
]


# -- the schema, as a mapping -----------------------------------------------------------------
#
# The reader is a small state machine over iterparse events restricted (in C, by libxml2) to the
# elements below: leaves are collected into a scratch dict, and each container, when it ends, takes
# what it needs from it. Walking each foyer's subtree from Python, or evaluating XPath per field,
# costs much more (measured in bench/BENCHMARKS.md).
#
# A revision of the schema is a mapping: which container carries the person's role (and on which
# condition), which leaves carry the droits et devoirs. VRSB0801 and VRSD0301 are both read.

ROLE_SOURCES: dict[str, tuple[str, str] | None] = {
    "Prestations": ("NATPREST", "RSA"),  # VRSB0801: two Prestations (PFA, RSA); the RSA one holds the role
    "FonctionPersonneRSA": None,  # VRSD0301
}
RIGHT_DETAILS = ("RSASocle", "RSAActivite")  # VRSD0301: DetailCalculDroitRSA split by part of the RSA
SDD_LEAVES = ("TOPPERSDRODEVORSA", "TOPPERSENTDRODEVORSA", "DDSOUDRODEV", "DFSOUDRODEV")

FOYER_LEAVES = (
    "FONORG NUMORG MATRICULE IDEPARTE DTDEMRSA NUMDEMRSA "
    "FONORGCEDMUT NUMORGCEDMUT MATRICULEORGCEDMUT DDARRMUT FONORGPRENMUT NUMORGPRENMUT DDDEPAMUT "
    "SITFAM RGADR PAYS NUMVOIE LIBTYPEVOIE NOMVOIE COMPLADR LIEUDIST CODEPOS NUMCOM NOMCOM "
    "LIBLIG2ADR LIBLIG3ADR LIBLIG4ADR LIBLIG5ADR LIBLIG6ADR LIBLIG7ADR "
    "ETATDOSRSA DTREFURSA MOTIREFURSA MOTISUSVERSRSA DDSUSVERSRSA MOTISUSDRORSA DDSUSDRORSA MOTICLORSA DTCLORSA "
    "DDNATDRO DTLIQ FG MOTITRANSFLUX"
).split()
PERSON_LEAVES = [
    *("QUAL", "NOM", "NOMNAI", "PRENOM", "DTNAI", "NIR", "SEXE", "NATPREST", "ROLEPERS", "IDASSEDIC"),
    "DTDC",  # VRSD0301: date of death
]
CONTAINERS = [
    "IdentificationRSA",
    "Personne",
    "Identification",
    "Rattachement",
    *ROLE_SOURCES,
    "SituationFamille",
    "Adresse",
    "EtatDossierRSA",
    "SuspensionVersement",
    "SuspensionDroit",
    "FinDroit",
    "FinDroitMoisAnterieur",
    "Refus",
    "DetailCalculDroitRSA",
    *RIGHT_DETAILS,
    "Evenement",
]
LEAVES = frozenset([*FOYER_LEAVES, *PERSON_LEAVES, *SDD_LEAVES])
# Containers whose leaves we do not want: their content is dropped when they end.
DISCARDED = frozenset({"Rattachement"})


@dataclass(slots=True)
class _RawPerson:
    line: int | None
    ident: dict[str, str | None]
    role: str | None
    rest: dict[str, str | None]


@dataclass(slots=True)
class _RawFoyer:
    ident: dict[str, str | None] = field(default_factory=dict)
    persons: list[_RawPerson] = field(default_factory=list)
    sitfam: str | None = None
    addresses: list[dict[str, str | None]] = field(default_factory=list)
    etat: str | None = None
    susp_versement: list[dict[str, str | None]] = field(default_factory=list)
    susp_droit: list[dict[str, str | None]] = field(default_factory=list)
    fin: dict[str, str | None] | None = None
    fin_previous_month: dict[str, str | None] | None = None
    refusal: dict[str, str | None] | None = None
    details: list[dict[str, str | None]] = field(default_factory=list)
    events: list[dict[str, str | None]] = field(default_factory=list)

    def take(self, tag: str, scratch: dict[str, str | None]) -> None:
        """A container of the foyer ended: file its leaves (DISCARDED and unknown containers are dropped)."""
        if tag == "IdentificationRSA":
            self.ident = scratch
        elif tag == "Adresse":
            self.addresses.append(scratch)
        elif tag == "SituationFamille":
            self.sitfam = scratch.get("SITFAM")
        elif tag == "EtatDossierRSA":
            self.etat = scratch.get("ETATDOSRSA")
        elif tag == "SuspensionVersement":
            self.susp_versement.append(scratch)
        elif tag == "SuspensionDroit":
            self.susp_droit.append(scratch)
        elif tag == "FinDroit":
            self.fin = scratch
        elif tag == "FinDroitMoisAnterieur":
            # where a state 6 right (closed on a previous month) carries its closure motive and date
            self.fin_previous_month = scratch
        elif tag == "Refus":
            self.refusal = scratch
        elif tag == "DetailCalculDroitRSA" or tag in RIGHT_DETAILS:
            self.details.append(scratch)
        elif tag == "Evenement":
            self.events.append(scratch)


_text = RecordContext.text  # a plain function: one attribute lookup less per field


def _person(ctx: RecordContext, raw: _RawPerson, position: int, dtref: date | None) -> PersonRecord:
    role = ctx.code(raw.role, "ROLEPERS", ROLEPERS_CODES)
    if role not in BRSA_ROLES:
        # Children and other members cannot be subject to droits et devoirs: their identity is not read
        # (data minimisation; the loader only counts them).
        return PersonRecord(position, role, None, None, None, None, None, None, None, None, None)
    ident, rest = raw.ident.get, raw.rest.get
    text, to_date = _text, ctx.date
    nir13: str | None = None
    raw_nir = ident("NIR")
    if raw_nir is not None and raw_nir.strip():
        try:
            nir13 = normalize_nir(raw_nir).nir13
        except InvalidNir as exc:
            # Never echo the NIR itself in a report: reports are read by people and stored.
            ctx.add(WARNING, "invalid_nir", f"NIR ignored ({exc}); the person is matched on other keys")
    sdd = ctx.flag(rest("TOPPERSDRODEVORSA"), "TOPPERSDRODEVORSA")
    sdd_since = to_date(rest("DDSOUDRODEV"), "DDSOUDRODEV")
    sdd_until = to_date(rest("DFSOUDRODEV"), "DFSOUDRODEV")
    if sdd is None and sdd_since is not None:
        # VRSD0301 dates the droits et devoirs instead of flagging them.
        ref = dtref or date.max
        sdd = sdd_since <= ref and (sdd_until is None or sdd_until >= ref)
    sexe = text(ident("SEXE"))
    if sexe is not None and sexe not in ("1", "2"):
        ctx.add(WARNING, "unknown_code", f"SEXE has the unknown code {sexe[:5]!r}; kept as is")
    return PersonRecord(
        position,
        role,
        text(ident("QUAL")),
        text(ident("NOM")),
        text(ident("NOMNAI")),
        text(ident("PRENOM")),
        to_date(ident("DTNAI"), "DTNAI"),
        sexe,
        nir13,
        sdd,
        ctx.flag(rest("TOPPERSENTDRODEVORSA"), "TOPPERSENTDRODEVORSA"),
        sdd_since,
        sdd_until,
        text(rest("IDASSEDIC")),
        to_date(ident("DTDC") or rest("DTDC"), "DTDC"),
    )


FRANCE = frozenset({"FRA", "FR", "FRANCE"})  # PAYS of an address in France (its country is not stored)


ABROAD_LINES = tuple(f"LIBLIG{n}ADR" for n in range(2, 8))  # AdresseHorsFrance


def _address(raw: _RawFoyer) -> Address:
    chosen: dict[str, str | None] | None = None
    for adr in raw.addresses:
        rank = (adr.get("RGADR") or "").strip()
        if chosen is None or rank in ("01", "1"):
            chosen = adr
            if rank in ("01", "1"):
                break
    if chosen is None:
        return Address()
    t, get = _text, chosen.get
    pays = t(get("PAYS"))
    abroad = " / ".join(x for x in map(t, map(get, ABROAD_LINES)) if x) or None
    return Address(
        t(get("NUMVOIE")),
        t(get("LIBTYPEVOIE")),
        t(get("NOMVOIE")),
        t(get("COMPLADR")),
        t(get("LIEUDIST")),
        t(get("CODEPOS")),
        t(get("NUMCOM")),
        t(get("NOMCOM")),
        pays if (abroad is not None or (pays is not None and pays.upper() not in FRANCE)) else None,
        abroad,
    )


def _foyer(raw: _RawFoyer, position: int, line: int | None, dtref: date | None) -> FoyerRecord:
    ctx = RecordContext(position, line)
    get = raw.ident.get
    text, to_date = _text, ctx.date
    fonorg = ctx.code(get("FONORG"), "FONORG", FONORG_CODES)
    matricule = text(get("MATRICULE"))
    if fonorg is None or matricule is None:
        ctx.add(REJECT_FOYER, "missing_field", "Organisme/FONORG and Organisme/MATRICULE are required")
    elif not matricule.isdigit() or len(matricule) > 15:
        ctx.add(WARNING, "invalid_field", "MATRICULE should be up to 15 digits; kept as is")
    persons = _persons(ctx, raw, dtref)
    ddnatdro = _ddnatdro(ctx, raw)
    fin = raw.fin or raw.fin_previous_month or {}
    refusal = raw.refusal or {}
    missing = _missing_blocks(ctx, raw, fin)
    # OrganismeCedant / OrganismePrenant: "CAF 541" (texts are stripped and never empty: `a or b` is the one set)
    cedant_org, cedant_num = text(get("FONORGCEDMUT")), text(get("NUMORGCEDMUT"))
    prenant_org, prenant_num = text(get("FONORGPRENMUT")), text(get("NUMORGPRENMUT"))
    cedant = f"{cedant_org} {cedant_num}" if cedant_org and cedant_num else cedant_org or cedant_num
    prenant = f"{prenant_org} {prenant_num}" if prenant_org and prenant_num else prenant_org or prenant_num
    previous_matricule = text(get("MATRICULEORGCEDMUT"))
    return FoyerRecord(
        position=position,
        line=line,
        fonorg=fonorg,
        numorg=text(get("NUMORG")),
        matricule=matricule,
        departement=text(get("IDEPARTE")),
        numdemrsa=text(get("NUMDEMRSA")),
        dtdemrsa=to_date(get("DTDEMRSA"), "DTDEMRSA"),
        etat=ctx.code(raw.etat, "ETATDOSRSA", ETATDOSRSA_CODES),
        suspensions_droit=[
            Suspension(text(s.get("MOTISUSDRORSA")), to_date(s.get("DDSUSDRORSA"), "DDSUSDRORSA"))
            for s in raw.susp_droit
        ],
        suspensions_versement=[
            Suspension(
                ctx.code(s.get("MOTISUSVERSRSA"), "MOTISUSVERSRSA", MOTISUSVERSRSA_CODES),
                to_date(s.get("DDSUSVERSRSA"), "DDSUSVERSRSA"),
            )
            for s in raw.susp_versement
        ],
        refusal_date=to_date(refusal.get("DTREFURSA"), "DTREFURSA"),
        refusal_motif=text(refusal.get("MOTIREFURSA")),
        closure_motif=ctx.code(fin.get("MOTICLORSA"), "MOTICLORSA", MOTICLORSA_CODES),
        closure_date=to_date(fin.get("DTCLORSA"), "DTCLORSA"),
        transfer_in_from=cedant,
        # the foyer a transferred dossier came from: the link to the person's history when there is no NIR
        previous_foyer=(
            (cedant_org, cedant_num, previous_matricule) if cedant_org and cedant_num and previous_matricule else None
        ),
        transfer_in_date=to_date(get("DDARRMUT"), "DDARRMUT"),
        transfer_out_to=prenant,
        transfer_out_date=to_date(get("DDDEPAMUT"), "DDDEPAMUT"),
        address=_address(raw),
        sitfam=ctx.code(raw.sitfam, "SITFAM", SITFAM_CODES),
        ddnatdro=ddnatdro,
        # VRSD0301: the event's cause is Evenement/ListeMotifsEvenement/MOTITRANSFLUX instead of FG
        events=[
            (to_date(e.get("DTLIQ"), "DTLIQ"), fg)
            for e in raw.events
            if (fg := text(e.get("FG")) or text(e.get("MOTITRANSFLUX")))
        ],
        persons=persons,
        problems=ctx.problems,
        missing_blocks=missing,
    )


def _persons(ctx: RecordContext, raw: _RawFoyer, dtref: date | None) -> list[PersonRecord]:
    """The foyer's persons, each once (a second record of the same NIR or identity and role is set aside)."""
    persons: list[PersonRecord] = []
    seen_nirs: set[str] = set()
    seen_identities: set[tuple[Any, ...]] = set()
    for rank, p_raw in enumerate(raw.persons, start=1):
        ctx.person, ctx.person_line = rank, p_raw.line
        person = _person(ctx, p_raw, rank, dtref)
        identity = (person.nom, person.prenom, person.date_naissance, person.role)
        if (person.nir13 and person.nir13 in seen_nirs) or (
            person.role in BRSA_ROLES and person.nom is not None and identity in seen_identities
        ):
            ctx.add(
                REJECT_PERSON, "duplicate_person", "the same person appears twice in this foyer; second one ignored"
            )
            continue
        if person.nir13:
            seen_nirs.add(person.nir13)
        seen_identities.add(identity)
        persons.append(person)
    ctx.person = None
    if not persons:
        ctx.add(REJECT_FOYER, "missing_element", "a foyer has at least one Personne")
    elif sum(1 for p in persons if p.role == "DEM") > 1:
        ctx.add(WARNING, "several_demandeurs", "more than one person has the role DEM")
    return persons


def _ddnatdro(ctx: RecordContext, raw: _RawFoyer) -> date | None:
    """The earliest start of the right among the calculation details."""
    ddnatdro: date | None = None
    for detail in raw.details:
        start = ctx.date(detail.get("DDNATDRO"), "DDNATDRO")
        if start is not None and (ddnatdro is None or start < ddnatdro):
            ddnatdro = start
    return ddnatdro


def _missing_blocks(ctx: RecordContext, raw: _RawFoyer, fin: dict[str, str | None]) -> int:
    """A missing block says nothing of what it would have carried: never read as "no state, no address".
    Detected from the mandatory elements of each block, whatever the schema revision names it."""
    missing = 0
    if (
        raw.etat is None
        and not raw.susp_droit
        and not raw.susp_versement
        and not fin
        and not raw.details
        and not raw.refusal
    ):
        missing |= MISSING_PRESTATION
        ctx.add(WARNING, "block_missing", "no PrestationRSA (state of the right): the state known before is kept")
    if not raw.addresses and raw.sitfam is None:
        missing |= MISSING_ADMINISTRATIVE
        ctx.add(WARNING, "block_missing", "no DonneesAdministratives (address): the address known before is kept")
    return missing


class FluxReader:
    """Iterate a flux file: `header` is set once the header is read; iterating yields `FoyerRecord`s;
    after the last one, the trailer has been checked against the count. Raises `FluxRejected`."""

    def __init__(self, path: Path, limits: FluxLimits | None = None) -> None:
        self.path = path
        self.limits = limits or FluxLimits()
        self.header: FluxHeader | None = None
        self.trailer: FluxTrailer | None = None
        self.foyers_read = 0
        self.first_departement: str | None = None
        self._reader: HashingReader | None = None

    @property
    def content_sha256(self) -> str:
        assert self._reader is not None
        return self._reader.sha256

    @property
    def bytes_read(self) -> int:
        return self._reader.bytes_read if self._reader else 0

    def __iter__(self) -> Iterator[FoyerRecord]:
        try:
            yield from self._records()
        except FluxRejected as exc:
            exc.foyers_read = self.foyers_read
            exc.departement = exc.departement or self.first_departement
            raise

    def _records(self) -> Iterator[FoyerRecord]:
        try:
            raw = open_flux(self.path)
        except OSError as exc:
            raise FluxRejected(f"cannot open the file: {exc.strerror}", None, "unreadable") from exc
        with raw:
            self._reader = HashingReader(raw, self.limits)
            try:
                yield from self._parse(self._reader)
            except GZIP_ERRORS as exc:
                raise gzip_truncated(exc, self._reader.bytes_read) from exc

    def _parse(self, reader: HashingReader) -> Iterator[FoyerRecord]:
        check_prolog(reader)
        context = safe_iterparse(reader, (HEADER, FOYER, TRAILER, *CONTAINERS, *LEAVES))
        try:
            yield from self._events(context)
        except etree.XMLSyntaxError as exc:
            raise syntax_error(exc, reader, self.foyers_read) from exc
        self._check_end(context.root)

    def _events(self, context: Any) -> Iterator[FoyerRecord]:
        """The parser's events: leaves gather into the scratch of their container; each container files
        its scratch into the foyer being read; a foyer's end yields its record."""
        person_ident: dict[str, str | None] = {}
        person_role: str | None = None
        scratch: dict[str, str | None] = {}
        foyer = _RawFoyer()
        leaves = LEAVES
        for _event, el in context:
            tag = el.tag
            if tag in leaves:
                scratch[tag] = el.text
                continue
            if tag == "Identification":
                person_ident = scratch
            elif tag in ROLE_SOURCES:
                cond = ROLE_SOURCES[tag]
                if cond is None or scratch.get(cond[0]) == cond[1]:
                    person_role = scratch.get("ROLEPERS")
            elif tag == "Personne":
                foyer.persons.append(_RawPerson(el.sourceline, person_ident, person_role, scratch))
                person_ident, person_role = {}, None
            elif tag == FOYER:
                yield self._foyer_end(el, foyer)
                foyer = _RawFoyer()
            elif tag == HEADER:
                self._on_header(el)
            elif tag == TRAILER:
                self._on_trailer(el)
            else:
                foyer.take(tag, scratch)
            # every container (kept or DISCARDED) starts the next one with an empty scratch
            scratch = {}

    def _foyer_end(self, el: Any, foyer: _RawFoyer) -> FoyerRecord:
        """A foyer read whole: its record; its element (and those before it) freed."""
        parent = el.getparent()
        check_top_level(el, parent)
        if self.header is None:
            raise FluxRejected("the header IdentificationFlux is missing", f"line {el.sourceline}", "missing_header")
        if self.trailer is not None:
            raise FluxRejected(f"<{el.tag}> after the trailer", f"line {el.sourceline}", "invalid_structure")
        self.foyers_read += 1
        record = _foyer(foyer, self.foyers_read, el.sourceline, self.header.dtref)
        if self.first_departement is None:
            self.first_departement = record.departement
        el.clear(keep_tail=False)
        while el.getprevious() is not None:
            del parent[0]
        assert self._reader is not None
        self._reader.record_freed()
        return record

    def _on_header(self, el: Any) -> None:
        check_top_level(el, el.getparent())
        if self.header is not None or self.foyers_read:
            raise FluxRejected("IdentificationFlux must come once, first", f"line {el.sourceline}", "invalid_structure")
        self.header = parse_header(el)
        if self.header.nat_flux != "D":
            raise FluxRejected(nature_message(self.header.nat_flux), HEADER, "other_nature")

    def _on_trailer(self, el: Any) -> None:
        check_top_level(el, el.getparent())
        if self.header is None:
            raise FluxRejected("the header IdentificationFlux is missing", f"line {el.sourceline}", "missing_header")
        declared = count_of(el, "NBTOTDOSRSATRANSM")
        if declared is None:
            raise FluxRejected("NBTOTDOSRSATRANSM is missing", f"line {el.sourceline}", "invalid_trailer")
        self.trailer = FluxTrailer(declared, count_of(el, "NBTOTDOSRSATRANSMANO"))

    def _check_end(self, root: Any) -> None:
        """The whole file read: its root, header and trailer, and the count the trailer announces."""
        if root is None or root.tag != ROOT:
            actual = root.tag if root is not None else "none"
            raise FluxRejected(f"the root element must be <{ROOT}>, not <{actual}>", "line 1", "wrong_root")
        if self.header is None:
            raise FluxRejected("the header IdentificationFlux is missing", None, "missing_header")
        if self.trailer is None:
            raise FluxRejected(
                f"the trailer TransmissionFlux is missing: the file is truncated after foyer {self.foyers_read}",
                "end of file",
                "truncated",
            )
        if self.trailer.declared_foyers != self.foyers_read:
            raise FluxRejected(
                f"the trailer announces {self.trailer.declared_foyers} foyers (NBTOTDOSRSATRANSM) "
                f"but the file holds {self.foyers_read}",
                "TransmissionFlux",
                "count_mismatch",
            )
