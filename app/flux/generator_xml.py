"""The XML the flux generator (`app.flux.generator`) writes: beneficiary files (VRSB0801, NATFLUX D) and
instruction files (VIRS0901, NATFLUX I) of its fictitious foyers. Draws no random number."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import IO
from xml.sax.saxutils import escape

from app.flux.generator_model import GeneratedFile, GenFoyer, GenPerson
from app.security.nir import nir_key


def _e(value: str) -> str:
    return escape(value, {"'": "&apos;"})


def person_xml(p: GenPerson) -> str:
    nir = ""
    if p.nir:
        value = p.nir + (f"{nir_key(p.nir):02d}" if p.nir_with_key else "")
        nir = f"<NIR>{value}</NIR>"
    calc = ""
    if p.role in ("DEM", "CJT"):
        calc = (
            "<MontantCalculDroitRSAPersonne>"
            f"<TOPPERSDRODEVORSA>{int(p.sdd)}</TOPPERSDRODEVORSA>"
            f"<TOPPERSENTDRODEVORSA>{int(p.sdd_entrant)}</TOPPERSENTDRODEVORSA>"
            "<MTPERSRESSMENRSA>0000000.00</MTPERSRESSMENRSA>"
            "</MontantCalculDroitRSAPersonne>"
        )
    pe = f"<DossierPoleEmploi><IDASSEDIC>{p.idassedic}</IDASSEDIC></DossierPoleEmploi>" if p.idassedic else ""
    return (
        "<Personne><Identification>"
        f"<QUAL>{p.qual}</QUAL><NOM>{_e(p.nom)}</NOM><NOMNAI>{_e(p.nom)}</NOMNAI><PRENOM>{_e(p.prenom)}</PRENOM>"
        f"<NOMCOMNAI>VERDUN</NOMCOMNAI><DTNAI>{p.dtnai.isoformat()}</DTNAI>{nir}<TOPVALIEC>1</TOPVALIEC>"
        f"<SEXE>{p.sexe}</SEXE></Identification>"
        f"<DossierCAF><TOPRESPDOS>{int(p.role == 'DEM')}</TOPRESPDOS><DDRATDOS>2020-01-01</DDRATDOS></DossierCAF>"
        f"<Prestations><NATPREST>PFA</NATPREST><ROLEPERS>{p.role}</ROLEPERS><TOPCHAPERS>0</TOPCHAPERS></Prestations>"
        f"<Prestations><NATPREST>RSA</NATPREST><ROLEPERS>{p.role}</ROLEPERS><TOPCHAPERS>1</TOPCHAPERS></Prestations>"
        f"{pe}{calc}</Personne>"
    )


def _transfer_xml(f: GenFoyer) -> str:
    """The foyer's OrganismeCedant and OrganismePrenant blocks, if it transferred in or out."""
    cedant = prenant = ""
    if f.cedant:
        c = f.cedant
        cedant = (
            f"<OrganismeCedant><FONORGCEDMUT>{c.fonorg}</FONORGCEDMUT><NUMORGCEDMUT>{c.numorg}</NUMORGCEDMUT>"
            f"<MATRICULEORGCEDMUT>{c.matricule}</MATRICULEORGCEDMUT><DDARRMUT>{c.arrival}</DDARRMUT>"
            "</OrganismeCedant>"
        )
    if f.prenant:
        p = f.prenant
        prenant = (
            f"<OrganismePrenant><FONORGPRENMUT>{p.fonorg}</FONORGPRENMUT>"
            f"<NUMORGPRENMUT>{p.numorg}</NUMORGPRENMUT><DDDEPAMUT>{p.departure}</DDDEPAMUT></OrganismePrenant>"
        )
    return cedant + prenant


def foyer_xml(f: GenFoyer, day: date, with_events: bool, departement: str) -> str:
    susp = ""
    if f.susp_versement:
        susp = (
            f"<SuspensionVersement><MOTISUSVERSRSA>{f.susp_versement[0]}</MOTISUSVERSRSA>"
            f"<DDSUSVERSRSA>{f.susp_versement[1]}</DDSUSVERSRSA></SuspensionVersement>"
        )
    fin = ""
    if f.closure:
        fin = f"<FinDroit><MOTICLORSA>{f.closure[0]}</MOTICLORSA><DTCLORSA>{f.closure[1]}</DTCLORSA></FinDroit>"
    code, cp, nom = f.commune
    events = ""
    if with_events:
        events = "".join(
            f"<Evenement><DTLIQ>{day - timedelta(days=1)}</DTLIQ><HEULIQ>16:42:00.0000</HEULIQ><FG>{fg}</FG>"
            "</Evenement>"
            for fg in f.events
        )
    sdd_foyer = int(any(p.sdd for p in f.persons if p.role in ("DEM", "CJT")))
    return (
        "<InfosFoyerRSA><IdentificationRSA>"
        f"<Organisme><FONORG>{f.fonorg}</FONORG><NUMORG>{f.numorg}</NUMORG><MATRICULE>{f.matricule}</MATRICULE>"
        f"</Organisme><Partenaire><TYPEPARTE>CG</TYPEPARTE><IDEPARTE>{departement}</IDEPARTE></Partenaire>"
        f"<DemandeRSA><DTDEMRSA>{f.dtdemrsa}</DTDEMRSA><NUMDEMRSA>{f.numdemrsa}</NUMDEMRSA></DemandeRSA>"
        f"{_transfer_xml(f)}</IdentificationRSA>"
        + "".join(person_xml(p) for p in f.persons)
        + "<DonneesAdministratives>"
        f"<SituationFamille><SITFAM>{f.sitfam}</SITFAM><DDSITFAM>2020-01-01</DDSITFAM></SituationFamille>"
        "<Adresse><TroncCommunAdresse><RGADR>01</RGADR><DTEMM>2020-01-01</DTEMM><PAYS>FRA</PAYS>"
        "<TYPEADR>D</TYPEADR><ETATADR>CO</ETATADR></TroncCommunAdresse><AdresseDetailleeFrance>"
        f"<NUMVOIE>{f.numvoie}</NUMVOIE><LIBTYPEVOIE>{f.voie.split()[0]}</LIBTYPEVOIE>"
        f"<NOMVOIE>{_e(' '.join(f.voie.split()[1:]))}</NOMVOIE><NUMCOM>{code}</NUMCOM><CODEPOS>{cp}</CODEPOS>"
        f"<NOMCOM>{_e(nom)}</NOMCOM></AdresseDetailleeFrance></Adresse></DonneesAdministratives>"
        "<PrestationRSA><SituationDossierRSA>"
        f"<EtatDossierRSA><ETATDOSRSA>{f.etat}</ETATDOSRSA></EtatDossierRSA>{susp}{fin}</SituationDossierRSA>"
        "<DetailDroitRSA><TroncCommunDroitRSA><TOPSANSDOMFIXE>0</TOPSANSDOMFIXE><NBENFAUTCHA>0</NBENFAUTCHA>"
        f"<ORIDEMRSA>DEM</ORIDEMRSA><TOPFOYDRODEVORSA>{sdd_foyer}</TOPFOYDRODEVORSA></TroncCommunDroitRSA>"
        f"<DetailCalculDroitRSA><NATPF>RSD</NATPF><SOUSNATPF>RSDN1</SOUSNATPF><DDNATDRO>{f.ddnatdro}</DDNATDRO>"
        "<MTRSAVERS>0000635.71</MTRSAVERS></DetailCalculDroitRSA></DetailDroitRSA></PrestationRSA>"
        f"{events}</InfosFoyerRSA>\n"
    )


def write_file(
    out_dir: Path,
    foyers: list[GenFoyer],
    type_flux: str,
    fonorg: str,
    day: date,
    received_on: date,
    departement: str,
    compress: bool = False,
    encoding: str = "windows-1252",
) -> GeneratedFile:
    """A beneficiary file (NATFLUX D) of these foyers; a daily one (`type_flux` I) carries their events."""
    numorg = "555" if fonorg == "MSA" else "551"
    applieme = "AGO" if fonorg == "MSA" else "CRI"
    name = f"{fonorg}_{numorg}_{type_flux}_{day:%Y%m%d}.xml" + (".gz" if compress else "")
    path = out_dir / name
    opener: Callable[..., IO[bytes]] = gzip.open if compress else open  # type: ignore[assignment]
    persons = 0
    with opener(path, "wb") as fh:
        write = fh.write
        write(f'<?xml version="1.0" encoding="{encoding}"?>\n<Racine>\n'.encode(encoding))
        write(
            (
                "<IdentificationFlux>"
                f"<APPLIEME>{applieme}</APPLIEME><NUMVERSIONAPPLIEME>6200</NUMVERSIONAPPLIEME>"
                f"<TYPEFLUX>{type_flux}</TYPEFLUX><NATFLUX>D</NATFLUX><DTCREAFLUX>{day}</DTCREAFLUX>"
                f"<HEUCREAFLUX>02:14:09.0000</HEUCREAFLUX><DTREF>{day - timedelta(days=1)}</DTREF>"
                "</IdentificationFlux>\n"
            ).encode(encoding)
        )
        batch: list[str] = []
        for f in foyers:
            batch.append(foyer_xml(f, day, type_flux == "I", departement))
            persons += len(f.persons)
            if len(batch) >= 2000:
                write("".join(batch).encode(encoding, errors="replace"))
                batch.clear()
        write("".join(batch).encode(encoding, errors="replace"))
        write(
            (
                f"<TransmissionFlux><NBTOTDOSRSATRANSM>{len(foyers):08d}</NBTOTDOSRSATRANSM>"
                "<NBTOTDOSRSATRANSMANO>00000000</NBTOTDOSRSATRANSMANO></TransmissionFlux>\n</Racine>\n"
            ).encode(encoding)
        )
    return GeneratedFile(path, type_flux, fonorg, day, received_on, len(foyers), persons)


def demand_xml(f: GenFoyer, n: int, departement: str) -> str:
    """One InfoDemandeRSA of an instruction flux: the foyer's demand, its persons (with their
    SuiviAppuiOrientation, DSP codes and computed parcours) and the demand's contacts and consents."""
    persons = "".join(
        "<Personne>"
        + person_xml(p)[len("<Personne>") : -len("</Personne>")]
        + "<Nationalite><NATI>"
        + ("F", "F", "F", "C", "A")[(n + len(p.nom)) % 5]
        + "</NATI></Nationalite>"
        + "<SuiviAppuiOrientation><TOPOBLSOCPRO>1</TOPOBLSOCPRO><TOPSOUHSOCPRO>1</TOPSOUHSOCPRO>"
        f"<DTENRSOCPRO>{f.dtdemrsa}</DTENRSOCPRO></SuiviAppuiOrientation>"
        "<DonneesSocioProfessionnelles><NIVETU>" + ("1206", "1205", "1204")[n % 3] + "</NIVETU>"
        "<HISPRO>" + ("1901", "1902", "1904")[n % 3] + "</HISPRO><TOPMOYLOCO>" + str(n % 2) + "</TOPMOYLOCO>"
        "<DifficulteSociale><DIFSOC>" + ("0402", "0403")[n % 2] + "</DIFSOC></DifficulteSociale>"
        "<LIBAUTRDIFSOC>texte libre</LIBAUTRDIFSOC></DonneesSocioProfessionnelles>"
        "<Parcours><DeterminationParcours><NATPARCOCAL>" + ("SOC", "PRO", "SOCPRO")[n % 3] + "</NATPARCOCAL>"
        "</DeterminationParcours></Parcours></Personne>"
        for p in f.persons
        if p.role in ("DEM", "CJT")
    )
    tel = f"06{(n * 7919) % 10**8:08d}"
    consent_tel, consent_mail = ("A", "A") if n % 3 else ("I", "A") if n % 2 else ("A", "I")
    return (
        "<InfoDemandeRSA><IdentificationRSA><Organisme>"
        f"<FONORG>{f.fonorg}</FONORG><NUMORG>{f.numorg}</NUMORG><MATRICULE>{f.matricule}</MATRICULE>"
        "<STATUDEMRSA>N</STATUDEMRSA></Organisme>"
        f"<Partenaire><TYPEPARTE>CG</TYPEPARTE><IDEPARTE>{departement}</IDEPARTE></Partenaire>"
        f"<DemandeRSA><DTDEMRSA>{f.dtdemrsa}</DTDEMRSA><NUMDEMRSA>{f.numdemrsa}</NUMDEMRSA></DemandeRSA>"
        f"</IdentificationRSA>{persons}<DonneesAdministratives><ModesContacts><NUMTEL>{tel}</NUMTEL>"
        f"<NATTEL>PER</NATTEL><MATETEL>POR</MATETEL><AUTORUTITEL>{consent_tel}</AUTORUTITEL>"
        f"<ADRELEC>{_e(f.persons[0].prenom.lower())}.{n}@exemple.fr</ADRELEC>"
        f"<AUTORUTIADRELEC>{consent_mail}</AUTORUTIADRELEC></ModesContacts></DonneesAdministratives>"
        "</InfoDemandeRSA>\n"
    )


def write_instruction_file(
    out_dir: Path, foyers: list[GenFoyer], day: date, received_on: date, departement: str, fonorg: str = "CAF"
) -> GeneratedFile:
    """An instruction flux (VIRS0901, NATFLUX I) for these foyers' demands, consistent with the
    beneficiary files: same organisme, matricules, demand numbers and persons."""
    numorg = "555" if fonorg == "MSA" else "551"
    path = out_dir / f"{fonorg}_{numorg}_INSTRUCTION_{day:%Y%m%d}.xml"
    body = "".join(demand_xml(f, n, departement) for n, f in enumerate(foyers, start=1))
    text = (
        '<?xml version="1.0" encoding="windows-1252"?>\n<Racine>\n<IdentificationFlux>'
        f"<APPLIEME>{'AGO' if fonorg == 'MSA' else 'CRI'}</APPLIEME><NUMVERSIONAPPLIEME>0366</NUMVERSIONAPPLIEME>"
        f"<TYPEFLUX>I</TYPEFLUX><NATFLUX>I</NATFLUX><DTCREAFLUX>{day}</DTCREAFLUX>"
        f"<HEUCREAFLUX>03:00:17.0000</HEUCREAFLUX><DTREF>{day - timedelta(days=1)}</DTREF></IdentificationFlux>\n"
        f"{body}<TransmissionFlux><NBTOTDOSRSATRANSM>{len(foyers):08d}</NBTOTDOSRSATRANSM>"
        "</TransmissionFlux>\n</Racine>\n"
    )
    path.write_bytes(text.encode("windows-1252", errors="replace"))
    persons = sum(1 for f in foyers for p in f.persons if p.role in ("DEM", "CJT"))
    return GeneratedFile(path, "I", fonorg, day, received_on, len(foyers), persons, nature="I")
