"""Typed records read from a CAF/MSA flux file, independent of the XML revision they came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

# Known code lists (formats/caf-flux.md). Unknown codes are kept as they are and reported.
ETATDOSRSA_CODES = frozenset("0123456")
ROLEPERS_CODES = frozenset({"DEM", "CJT", "ENF", "AUT", "RDO", "BEN"})
# Only these roles can be BRSA subject to droits et devoirs; the others are not stored (minimisation).
BRSA_ROLES = frozenset({"DEM", "CJT", "BEN"})
FONORG_CODES = frozenset({"CAF", "MSA"})
TYPEFLUX_CODES = frozenset({"I", "M", "R"})
# The sending application (APPLIEME) tells the sender: Cristal and @RSA (NRA, NRS) are the CAF's, Agora the MSA's.
SENDER_OF_APPLIEME = {"CRI": "CAF", "NRA": "CAF", "NRS": "CAF", "AGO": "MSA"}
APPLIEME_CODES = frozenset(SENDER_OF_APPLIEME)
MOTICLORSA_CODES = frozenset({"PCG", "ECH", "EFF", "MUT", "RGD", "RFD", "RAU", "RST", "RSO"})
MOTISUSVERSRSA_CODES = frozenset("01 02 03 04 05 06 09 19 31 34 35 36 44 70 78 84 85 97 AB CV CG CZ DA DB DC".split())
SITFAM_CODES = frozenset("ABA CEL DIV ISO MAR PAC RPA RVC RVM SEF SEL VEU VIM".split())


@dataclass(slots=True)
class FluxHeader:
    applieme: str
    version: str | None
    type_flux: str  # I daily, M monthly, R reprise
    nat_flux: str | None
    created_at: datetime
    dtref: date | None


@dataclass(slots=True)
class Suspension:
    motif: str | None
    since: date | None


@dataclass(slots=True)
class Address:
    numvoie: str | None = None
    typevoie: str | None = None
    nomvoie: str | None = None
    complement: str | None = None
    lieudit: str | None = None
    codepos: str | None = None
    numcom: str | None = None  # INSEE commune code
    nomcom: str | None = None
    pays: str | None = None  # only for an address abroad (PAYS other than France, or AdresseHorsFrance)
    lines_abroad: str | None = None  # AdresseHorsFrance/LIBLIG2ADR..LIBLIG7ADR, joined with " / "


@dataclass(slots=True)
class PersonRecord:
    position: int  # 1-based rank of the person in its foyer
    role: str | None
    qual: str | None
    nom: str | None
    nomnai: str | None
    prenom: str | None
    date_naissance: date | None
    sexe: str | None
    nir13: str | None  # validated, 13 characters; None when absent or invalid (then a warning says why)
    sdd: bool | None  # TOPPERSDRODEVORSA
    sdd_entrant: bool | None  # TOPPERSENTDRODEVORSA
    sdd_since: date | None = None  # VRSD0301 DDSOUDRODEV
    sdd_until: date | None = None  # VRSD0301 DFSOUDRODEV
    idassedic: str | None = None
    death_date: date | None = None  # VRSD0301 DTDC: closes any follow-up, ends any entry episode


@dataclass(slots=True)
class FoyerRecord:
    position: int  # 1-based rank of the foyer in the file
    line: int | None
    fonorg: str | None
    numorg: str | None
    matricule: str | None
    departement: str | None
    numdemrsa: str | None
    dtdemrsa: date | None
    etat: str | None
    suspensions_droit: list[Suspension]
    suspensions_versement: list[Suspension]
    closure_motif: str | None
    closure_date: date | None
    transfer_in_from: str | None  # "CAF 541"
    transfer_in_date: date | None
    transfer_out_to: str | None
    transfer_out_date: date | None
    address: Address
    sitfam: str | None
    ddnatdro: date | None
    events: list[tuple[date | None, str]]
    persons: list[PersonRecord]
    # Problems found while reading this record (code, message); the loader decides what they mean.
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (severity, code, message)
    # OrganismeCedant: (fonorg, numorg, matricule) of the foyer a transferred dossier came from
    previous_foyer: tuple[str, str, str] | None = None
    # Blocks the record does not carry (MISSING_PRESTATION | MISSING_ADMINISTRATIVE): what they would have
    # said is not known from this record, and the loader keeps the values known before (issue #9).
    missing_blocks: int = 0
    # Refus (DTREFURSA, MOTIREFURSA, e.g. DSD): a refused demand
    refusal_date: date | None = None
    refusal_motif: str | None = None


MISSING_PRESTATION = 1  # PrestationRSA: the right's state, suspensions, closure, right start
MISSING_ADMINISTRATIVE = 2  # DonneesAdministratives: address, family situation


@dataclass(slots=True)
class FluxTrailer:
    declared_foyers: int
    declared_anomalies: int | None
