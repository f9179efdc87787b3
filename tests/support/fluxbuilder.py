"""Build small flux files for tests, with the project's own generator writing the XML."""

from __future__ import annotations

import gzip
from datetime import date
from pathlib import Path

from app.flux.generator import FluxGenerator, GenFoyer, GenPerson

NIR_A = "1900555545123"  # fictitious
NIR_B = "2920655545124"
NIR_C = "1850799123456"


def person(
    nir: str | None = NIR_A,
    role: str = "DEM",
    sdd: bool = True,
    nom: str = "DUPONT",
    prenom: str = "JEAN",
    dtnai: date = date(1990, 1, 15),
    sexe: str = "1",
    with_key: bool = False,
    entrant: bool = False,
) -> GenPerson:
    return GenPerson(
        nir=nir,
        nir_with_key=with_key,
        qual="MR" if sexe == "1" else "MME",
        nom=nom,
        prenom=prenom,
        dtnai=dtnai,
        sexe=sexe,
        role=role,
        sdd=sdd,
        sdd_entrant=entrant,
    )


def foyer(
    *persons: GenPerson,
    matricule: str = "0001234",
    etat: str = "2",
    fonorg: str = "CAF",
    numorg: str = "551",
    numdemrsa: str | None = None,  # default: derived from the matricule (one demand per foyer)
    closure: tuple[str, date] | None = None,
    susp: tuple[str, date] | None = None,
    commune: tuple[str, str, str] = ("55545", "55100", "VERDUN"),
    events: list[str] | None = None,
    dtdemrsa: date = date(2024, 2, 5),
    ddnatdro: date = date(2024, 2, 1),
) -> GenFoyer:
    return GenFoyer(
        fonorg=fonorg,
        numorg=numorg,
        matricule=matricule,
        numdemrsa=numdemrsa or f"550{matricule[-8:]:0>8}",
        dtdemrsa=dtdemrsa,
        ddnatdro=ddnatdro,
        etat=etat,
        persons=list(persons) or [person()],
        commune=commune,
        numvoie="12",
        voie="RUE DES EXEMPLES",
        sitfam="ISO",
        susp_versement=susp,
        closure=closure,
        events=events or [],
    )


def write_flux(
    directory: Path,
    foyers: list[GenFoyer],
    *,
    type_flux: str = "I",
    day: date = date(2024, 3, 1),
    fonorg: str = "CAF",
    encoding: str = "windows-1252",
    compress: bool = False,
    name: str | None = None,
    departement: str = "055",
) -> Path:
    gen = FluxGenerator(0, day, departement=departement)
    generated = gen.write_file(directory, foyers, type_flux, fonorg, day, day, compress, encoding)
    if name:
        target = directory / name
        generated.path.rename(target)
        return target
    return generated.path


def text_of(path: Path) -> str:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.decode("latin-1")


# Where the generator's IdentificationRSA ends: transfer blocks are inserted there.
IDENTIFICATION_END = "</DemandeRSA></IdentificationRSA>"


def transfer_blocks(
    *, cedant: tuple[str, str, str, str] | None = None, prenant: tuple[str, str, str] | None = None
) -> str:
    """What replaces IDENTIFICATION_END to add OrganismeCedant (fonorg, numorg, matricule there, arrival
    date) and/or OrganismePrenant (fonorg, numorg, departure date), as real files carry them."""
    blocks = ""
    if cedant:
        fonorg, numorg, matricule, arrival = cedant
        blocks += (
            f"<OrganismeCedant><FONORGCEDMUT>{fonorg}</FONORGCEDMUT><NUMORGCEDMUT>{numorg}</NUMORGCEDMUT>"
            f"<MATRICULEORGCEDMUT>{matricule}</MATRICULEORGCEDMUT><DDARRMUT>{arrival}</DDARRMUT></OrganismeCedant>"
        )
    if prenant:
        fonorg, numorg, departure = prenant
        blocks += (
            f"<OrganismePrenant><FONORGPRENMUT>{fonorg}</FONORGPRENMUT><NUMORGPRENMUT>{numorg}</NUMORGPRENMUT>"
            f"<DDDEPAMUT>{departure}</DDDEPAMUT></OrganismePrenant>"
        )
    return f"</DemandeRSA>{blocks}</IdentificationRSA>"


# A refused demand, where real files put it (SituationDossierRSA, right after EtatDossierRSA).
STATE_END = "</EtatDossierRSA>"


def refusal_block(date_: str = "2024-02-20", motif: str = "DSD") -> str:
    return f"</EtatDossierRSA><Refus><DTREFURSA>{date_}</DTREFURSA><MOTIREFURSA>{motif}</MOTIREFURSA></Refus>"


def abroad(data: bytes, pays: str = "BEL", lines: tuple[str, ...] = ("RUE DE LA LOI 16", "1000 BRUXELLES")) -> bytes:
    """The generator's French address of each foyer made an address abroad: PAYS and AdresseHorsFrance
    (LIBLIG2ADR...) instead of AdresseDetailleeFrance, as the public schema has it."""
    import re

    tags = [f"<LIBLIG{n}ADR>{line}</LIBLIG{n}ADR>" for n, line in zip((2, 6, 3, 4, 5, 7), lines, strict=False)]
    data = data.replace(b"<PAYS>FRA</PAYS>", f"<PAYS>{pays}</PAYS>".encode())
    return re.sub(
        rb"<AdresseDetailleeFrance>.*?</AdresseDetailleeFrance>",
        f"<AdresseHorsFrance>{''.join(tags)}</AdresseHorsFrance>".encode(),
        data,
        flags=re.DOTALL,
    )


def write_instruction(
    directory: Path, foyers: list[GenFoyer], *, day: date = date(2024, 3, 1), departement: str = "055"
) -> Path:
    """An instruction flux (NATFLUX I) for these foyers, with contacts and consents (the generator's)."""
    gen = FluxGenerator(0, day, departement=departement)
    return gen.write_instruction_file(directory, foyers, day, day).path
