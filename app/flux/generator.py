"""Generator of realistic, fictitious CAF/MSA flux files (VRSB0801) for tests, demos and benchmarks.

It simulates a département's RSA population: a monthly stock file (one per organisme), then one daily
file per business day with what changed — new demands, entries into and exits from the droits et
devoirs, short and long suspensions, closures and returns, transfers in and out, conjoints joining and
leaving, children, MSA foyers, persons without NIR — and a full monthly file at each month's start.
Deterministic for a given seed. A `manifest.json` lists the files with the date the Département
received each one (not in the files themselves).
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import IO
from xml.sax.saxutils import escape

from app.security.nir import nir_key

NOMS = (
    "MARTIN BERNARD THOMAS PETIT ROBERT RICHARD DURAND DUBOIS MOREAU LAURENT SIMON MICHEL LEFEBVRE LEROY ROUX "
    "DAVID BERTRAND MOREL FOURNIER GIRARD BONNET DUPONT LAMBERT FONTAINE ROUSSEAU VINCENT MULLER LEFEVRE FAURE "
    "ANDRE MERCIER BLANC GUERIN BOYER GARNIER CHEVALIER FRANCOIS LEGRAND GAUTHIER GARCIA PERRIN ROBIN CLEMENT "
    "MORIN NICOLAS HENRY ROUSSEL MATHIEU GAUTIER MASSON MARCHAND DUVAL DENIS DUMONT MARIE LEMAIRE NOEL MEYER "
    "DUFOUR MEUNIER BRUN BLANCHARD GIRAUD JOLY RIVIERE LUCAS BRUNET GAILLARD BARBIER ARNAUD MARTINEZ GERARD "
    "ROCHE RENARD SCHMITT ROY LEROUX COLIN VIDAL CARON PICARD ROGER FABRE AUBERT LEMOINE RENAUD DUMAS LACROIX "
    "OLIVIER PHILIPPE BOURGEOIS PIERRE BENOIT REY LECLERC PAYET ROLLAND LECLERCQ GUILLAUME LECOMTE LOPEZ JEAN "
    "D'ALMEIDA N'DIAYE LÉGER HÉBERT PRÉVOST"
).split()
PRENOMS_F = (
    "CAMILLE MARIE NATHALIE ISABELLE SYLVIE CATHERINE SANDRINE VALÉRIE SOPHIE CÉLINE AURÉLIE JULIE EMMA LÉA "
    "CHLOÉ INÈS MANON SARAH LAURA AMANDINE"
).split()
PRENOMS_M = (
    "JEAN PIERRE MICHEL PHILIPPE ALAIN NICOLAS CHRISTOPHE LAURENT FRÉDÉRIC SÉBASTIEN JULIEN DAVID KEVIN THOMAS "
    "LUCAS HUGO KARIM MOHAMED YANNICK JÉRÔME"
).split()
COMMUNES = [
    ("55545", "55100", "VERDUN"),
    ("55029", "55000", "BAR-LE-DUC"),
    ("55502", "55300", "SAINT-MIHIEL"),
    ("55154", "55200", "COMMERCY"),
    ("55545", "55100", "VERDUN"),
    ("55040", "55100", "BELLEVILLE-SUR-MEUSE"),
    ("55500", "55200", "SAINT-AUBIN-SUR-AIRE"),
    ("55186", "55400", "ÉTAIN"),
    ("55531", "55500", "LIGNY-EN-BARROIS"),
    ("55365", "55600", "MONTMÉDY"),
]
VOIES = ["RUE", "AVENUE", "CHEMIN", "PLACE", "ALLEE", "IMPASSE"]
NOMS_VOIE = ["DES EXEMPLES", "DE LA GARE", "VICTOR HUGO", "JEAN JAURES", "DU MOULIN", "DES ÉCOLES", "DE LA PAIX"]


@dataclass
class GenPerson:
    nir: str | None
    nir_with_key: bool
    qual: str
    nom: str
    prenom: str
    dtnai: date
    sexe: str
    role: str
    sdd: bool = True
    sdd_entrant: bool = False
    oscillates: bool = False  # income crosses 500 € back and forth
    idassedic: str | None = None


@dataclass
class GenFoyer:
    fonorg: str
    numorg: str
    matricule: str
    numdemrsa: str
    dtdemrsa: date
    ddnatdro: date
    etat: str
    persons: list[GenPerson]
    commune: tuple[str, str, str]
    numvoie: str
    voie: str
    sitfam: str
    susp_versement: tuple[str, date] | None = None
    closure: tuple[str, date] | None = None
    cedant: tuple[str, str, str, date] | None = None
    prenant: tuple[str, str, date] | None = None
    events: list[str] = field(default_factory=list)
    resume_on: date | None = None  # end of a short suspension
    closed_since: date | None = None
    gone: bool = False  # transferred out or closed and no longer sent


@dataclass
class GeneratedFile:
    path: Path
    type_flux: str
    fonorg: str
    created_on: date
    received_on: date
    foyers: int
    persons: int
    initial_stock: bool = False  # the first monthly files of a run: the initial stock
    nature: str = "D"  # NATFLUX: D beneficiary flux, I instruction flux


class FluxGenerator:
    def __init__(
        self,
        foyers: int,
        start: date,
        seed: int = 1,
        departement: str = "055",
        msa_share: float = 0.06,
        no_nir_share: float = 0.03,
    ) -> None:
        self.rng = random.Random(seed)
        self.departement = departement
        self.start = start
        self.msa_share = msa_share
        self.no_nir_share = no_nir_share
        self._matricule = 1_000_000
        self._numdem = 0
        self._nir_order = 0
        self.foyers: list[GenFoyer] = []
        self.initial_foyers = foyers
        for _ in range(foyers):
            self.foyers.append(self._stock_foyer())

    # -- people ------------------------------------------------------------------------------

    def _nir(self, sexe: str, dtnai: date) -> str | None:
        if self.rng.random() < self.no_nir_share:
            return None
        # Unique by construction (commune and order come from a counter): no two fictitious persons share one.
        self._nir_order = (self._nir_order + 1) % 1_000_000
        dept = self.rng.choice(["55", "54", "75", "57", "2A", "2B", "99"])
        commune = f"{self._nir_order // 1000:03d}"
        order = f"{self._nir_order % 1000:03d}"
        body = f"{sexe}{dtnai.year % 100:02d}{dtnai.month:02d}{dept}{commune}{order}"
        return body

    def _person(self, role: str, ref: date, age_range: tuple[int, int] = (18, 64)) -> GenPerson:
        rng = self.rng
        sexe = rng.choice("12")
        age = rng.randint(*age_range)
        dtnai = date(ref.year - age, rng.randint(1, 12), rng.randint(1, 28))
        nir = self._nir(sexe, dtnai)
        return GenPerson(
            nir=nir,
            nir_with_key=nir is not None and rng.random() < 0.3,
            qual="MR" if sexe == "1" else "MME",
            nom=rng.choice(NOMS),
            prenom=rng.choice(PRENOMS_M if sexe == "1" else PRENOMS_F),
            dtnai=dtnai,
            sexe=sexe,
            role=role,
            sdd=role in ("DEM", "CJT") and rng.random() < 0.88,
            oscillates=role in ("DEM", "CJT") and rng.random() < 0.05,
            idassedic=f"{rng.randint(0, 99_999_999):08d}A" if rng.random() < 0.4 else None,
        )

    def _new_foyer(self, ref: date, msa: bool | None = None) -> GenFoyer:
        rng = self.rng
        msa = (rng.random() < self.msa_share) if msa is None else msa
        self._matricule += rng.randint(1, 7)
        self._numdem += 1
        persons = [self._person("DEM", ref)]
        couple = rng.random() < 0.3
        if couple:
            persons.append(self._person("CJT", ref))
        for _ in range(rng.choice([0, 0, 0, 1, 1, 2, 3])):
            persons.append(self._person("ENF", ref, (0, 17)))
        commune = rng.choice(COMMUNES)
        return GenFoyer(
            fonorg="MSA" if msa else "CAF",
            numorg="555" if msa else "551",
            matricule=f"{self._matricule:07d}",
            numdemrsa=f"{self.departement[1:]}{self._numdem:09d}",
            dtdemrsa=ref - timedelta(days=rng.randint(3, 25)),
            ddnatdro=(ref - timedelta(days=rng.randint(3, 25))).replace(day=1),
            etat="2",
            persons=persons,
            commune=commune,
            numvoie=str(rng.randint(1, 120)),
            voie=f"{rng.choice(VOIES)} {rng.choice(NOMS_VOIE)}",
            sitfam="MAR" if couple else rng.choice(["CEL", "ISO", "DIV", "SEF"]),
        )

    def _stock_foyer(self) -> GenFoyer:
        rng = self.rng
        f = self._new_foyer(self.start - timedelta(days=rng.randint(30, 2000)))
        roll = rng.random()
        if roll < 0.05:
            # suspended for more than a year: coming back makes them nouveaux entrants again
            f.etat = "4"
            f.susp_versement = ("06", self.start - timedelta(days=rng.randint(380, 700)))
        elif roll < 0.09:
            f.etat = "4"
            f.susp_versement = ("06", self.start - timedelta(days=rng.randint(10, 200)))
        return f

    # -- life --------------------------------------------------------------------------------

    def _active(self) -> list[GenFoyer]:
        return [f for f in self.foyers if not f.gone]

    def _day(self, day: date) -> set[int]:
        """Apply one day's events; return the indexes of foyers that changed."""
        rng = self.rng
        changed: set[int] = set()
        n = max(self.initial_foyers, 1)

        def count(rate: float) -> int:
            expected = rate * n
            whole = int(expected)
            return whole + (1 if rng.random() < expected - whole else 0)

        def touch(f: GenFoyer, event: str) -> None:
            f.events.append(event)
            changed.add(id(f))

        active = self._active()
        # new demands: first-time demanders (most SDD)
        for _ in range(count(0.0020)):
            f = self._new_foyer(day)
            for p in f.persons:
                p.sdd_entrant = p.sdd
            f.dtdemrsa = day - timedelta(days=rng.randint(3, 20))
            self.foyers.append(f)
            touch(f, "DEMRSA")
            if any(p.sdd for p in f.persons):
                f.events.append("ENTDED")
        # transfers in: SDD persons who just moved into the département
        for _ in range(count(0.0003)):
            f = self._new_foyer(day, msa=False)
            f.cedant = ("CAF", rng.choice(["541", "571", "081", "751"]), f"{rng.randint(1, 9_999_999):07d}", day)
            for p in f.persons:
                p.sdd_entrant = p.sdd
            self.foyers.append(f)
            touch(f, "MUT")
        if not active:
            return changed
        # entries into / exits from droits et devoirs (income around 500 €)
        for _ in range(count(0.0025)):
            f = rng.choice(active)
            adults = [p for p in f.persons if p.role in ("DEM", "CJT")]
            if f.etat != "2" or not adults:
                continue
            p = rng.choice([a for a in adults if a.oscillates] or adults)
            p.sdd = not p.sdd
            p.sdd_entrant = p.sdd
            touch(f, "ENTDED" if p.sdd else "SITPRO")
        # short suspensions (missing quarterly declaration)
        for _ in range(count(0.0008)):
            f = rng.choice(active)
            if f.etat == "2":
                f.etat = "4"
                f.susp_versement = (rng.choice(["06", "01", "AB"]), day)
                f.resume_on = day + timedelta(days=rng.randint(10, 75))
                touch(f, "SUS")
        # resumptions: short suspensions ending, and long ones (> 12 months) coming back
        for f in active:
            if f.etat == "4" and f.resume_on is not None and f.resume_on <= day:
                f.etat, f.susp_versement, f.resume_on = "2", None, None
                touch(f, "SUS")
        long_suspended = [f for f in active if f.etat == "4" and f.resume_on is None]
        for f in rng.sample(long_suspended, k=min(len(long_suspended), count(0.0003))):
            f.etat, f.susp_versement = "2", None
            for p in f.persons:
                p.sdd_entrant = p.sdd
            touch(f, "SUS")
        # closures (radiation), transfers out
        for _ in range(count(0.0012)):
            f = rng.choice(active)
            if f.etat in ("2", "4") and not f.gone:
                f.etat = "5"
                f.closure = (rng.choice(["RFD", "RAU", "PCG", "EFF"]), day)
                f.closed_since = day
                f.susp_versement = None
                touch(f, "RAD")
        for _ in range(count(0.0003)):
            f = rng.choice(active)
            if f.etat == "2":
                f.etat = "5"
                f.closure = ("MUT", day)
                f.prenant = ("CAF", rng.choice(["541", "571", "751"]), day)
                touch(f, "MUT")
        # radiés coming back (a new demand for the same foyer)
        closed = [f for f in active if f.etat == "5" and f.closure and f.closure[0] != "MUT"]
        for f in rng.sample(closed, k=min(len(closed), count(0.0002))):
            if f.closed_since and (day - f.closed_since).days > 20:
                self._numdem += 1
                f.numdemrsa = f"{self.departement[1:]}{self._numdem:09d}"
                f.etat, f.closure, f.closed_since = "2", None, None
                f.dtdemrsa = day - timedelta(days=5)
                for p in f.persons:
                    p.sdd_entrant = p.sdd
                touch(f, "DEMRSA")
        # conjoints joining and leaving
        for _ in range(count(0.0004)):
            f = rng.choice(active)
            if f.etat == "2" and not any(p.role == "CJT" for p in f.persons):
                cjt = self._person("CJT", day)
                cjt.sdd_entrant = cjt.sdd
                f.persons.insert(1, cjt)
                f.sitfam = "VIM"
                touch(f, "SITFAM")
        for _ in range(count(0.0002)):
            f = rng.choice(active)
            if f.etat == "2" and any(p.role == "CJT" for p in f.persons):
                f.persons = [p for p in f.persons if p.role != "CJT"]
                f.sitfam = "SEF"
                touch(f, "SITFAM")
        # births
        for _ in range(count(0.0002)):
            f = rng.choice(active)
            if f.etat == "2":
                f.persons.append(self._person("ENF", day, (0, 0)))
                touch(f, "SITENFAUT")
        return changed

    # -- XML ---------------------------------------------------------------------------------

    @staticmethod
    def _e(value: str) -> str:
        return escape(value, {"'": "&apos;"})

    def _person_xml(self, p: GenPerson) -> str:
        e = self._e
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
            f"<QUAL>{p.qual}</QUAL><NOM>{e(p.nom)}</NOM><NOMNAI>{e(p.nom)}</NOMNAI><PRENOM>{e(p.prenom)}</PRENOM>"
            f"<NOMCOMNAI>VERDUN</NOMCOMNAI><DTNAI>{p.dtnai.isoformat()}</DTNAI>{nir}<TOPVALIEC>1</TOPVALIEC>"
            f"<SEXE>{p.sexe}</SEXE></Identification>"
            f"<DossierCAF><TOPRESPDOS>{int(p.role == 'DEM')}</TOPRESPDOS><DDRATDOS>2020-01-01</DDRATDOS></DossierCAF>"
            f"<Prestations><NATPREST>PFA</NATPREST><ROLEPERS>{p.role}</ROLEPERS><TOPCHAPERS>0</TOPCHAPERS></Prestations>"
            f"<Prestations><NATPREST>RSA</NATPREST><ROLEPERS>{p.role}</ROLEPERS><TOPCHAPERS>1</TOPCHAPERS></Prestations>"
            f"{pe}{calc}</Personne>"
        )

    def _foyer_xml(self, f: GenFoyer, day: date, with_events: bool) -> str:
        e = self._e
        cedant = prenant = ""
        if f.cedant:
            cedant = (
                f"<OrganismeCedant><FONORGCEDMUT>{f.cedant[0]}</FONORGCEDMUT><NUMORGCEDMUT>{f.cedant[1]}</NUMORGCEDMUT>"
                f"<MATRICULEORGCEDMUT>{f.cedant[2]}</MATRICULEORGCEDMUT><DDARRMUT>{f.cedant[3]}</DDARRMUT>"
                "</OrganismeCedant>"
            )
        if f.prenant:
            prenant = (
                f"<OrganismePrenant><FONORGPRENMUT>{f.prenant[0]}</FONORGPRENMUT>"
                f"<NUMORGPRENMUT>{f.prenant[1]}</NUMORGPRENMUT><DDDEPAMUT>{f.prenant[2]}</DDDEPAMUT></OrganismePrenant>"
            )
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
            f"</Organisme><Partenaire><TYPEPARTE>CG</TYPEPARTE><IDEPARTE>{self.departement}</IDEPARTE></Partenaire>"
            f"<DemandeRSA><DTDEMRSA>{f.dtdemrsa}</DTDEMRSA><NUMDEMRSA>{f.numdemrsa}</NUMDEMRSA></DemandeRSA>"
            f"{cedant}{prenant}</IdentificationRSA>"
            + "".join(self._person_xml(p) for p in f.persons)
            + "<DonneesAdministratives>"
            f"<SituationFamille><SITFAM>{f.sitfam}</SITFAM><DDSITFAM>2020-01-01</DDSITFAM></SituationFamille>"
            "<Adresse><TroncCommunAdresse><RGADR>01</RGADR><DTEMM>2020-01-01</DTEMM><PAYS>FRA</PAYS>"
            "<TYPEADR>D</TYPEADR><ETATADR>CO</ETATADR></TroncCommunAdresse><AdresseDetailleeFrance>"
            f"<NUMVOIE>{f.numvoie}</NUMVOIE><LIBTYPEVOIE>{f.voie.split()[0]}</LIBTYPEVOIE>"
            f"<NOMVOIE>{e(' '.join(f.voie.split()[1:]))}</NOMVOIE><NUMCOM>{code}</NUMCOM><CODEPOS>{cp}</CODEPOS>"
            f"<NOMCOM>{e(nom)}</NOMCOM></AdresseDetailleeFrance></Adresse></DonneesAdministratives>"
            "<PrestationRSA><SituationDossierRSA>"
            f"<EtatDossierRSA><ETATDOSRSA>{f.etat}</ETATDOSRSA></EtatDossierRSA>{susp}{fin}</SituationDossierRSA>"
            "<DetailDroitRSA><TroncCommunDroitRSA><TOPSANSDOMFIXE>0</TOPSANSDOMFIXE><NBENFAUTCHA>0</NBENFAUTCHA>"
            f"<ORIDEMRSA>DEM</ORIDEMRSA><TOPFOYDRODEVORSA>{sdd_foyer}</TOPFOYDRODEVORSA></TroncCommunDroitRSA>"
            f"<DetailCalculDroitRSA><NATPF>RSD</NATPF><SOUSNATPF>RSDN1</SOUSNATPF><DDNATDRO>{f.ddnatdro}</DDNATDRO>"
            "<MTRSAVERS>0000635.71</MTRSAVERS></DetailCalculDroitRSA></DetailDroitRSA></PrestationRSA>"
            f"{events}</InfosFoyerRSA>\n"
        )

    def write_file(
        self,
        out_dir: Path,
        foyers: list[GenFoyer],
        type_flux: str,
        fonorg: str,
        day: date,
        received_on: date,
        compress: bool = False,
        encoding: str = "windows-1252",
    ) -> GeneratedFile:
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
                batch.append(self._foyer_xml(f, day, with_events=type_flux == "I"))
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

    def _demand_xml(self, f: GenFoyer, n: int) -> str:
        """One InfoDemandeRSA of an instruction flux: the foyer's demand, its persons (with their
        SuiviAppuiOrientation, DSP codes and computed parcours) and the demand's contacts and consents."""
        e = self._e
        persons = "".join(
            "<Personne>"
            + self._person_xml(p)[len("<Personne>") : -len("</Personne>")]
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
            f"<Partenaire><TYPEPARTE>CG</TYPEPARTE><IDEPARTE>{self.departement}</IDEPARTE></Partenaire>"
            f"<DemandeRSA><DTDEMRSA>{f.dtdemrsa}</DTDEMRSA><NUMDEMRSA>{f.numdemrsa}</NUMDEMRSA></DemandeRSA>"
            f"</IdentificationRSA>{persons}<DonneesAdministratives><ModesContacts><NUMTEL>{tel}</NUMTEL>"
            f"<NATTEL>PER</NATTEL><MATETEL>POR</MATETEL><AUTORUTITEL>{consent_tel}</AUTORUTITEL>"
            f"<ADRELEC>{e(f.persons[0].prenom.lower())}.{n}@exemple.fr</ADRELEC>"
            f"<AUTORUTIADRELEC>{consent_mail}</AUTORUTIADRELEC></ModesContacts></DonneesAdministratives>"
            "</InfoDemandeRSA>\n"
        )

    def write_instruction_file(
        self, out_dir: Path, foyers: list[GenFoyer], day: date, received_on: date, fonorg: str = "CAF"
    ) -> GeneratedFile:
        """An instruction flux (VIRS0901, NATFLUX I) for these foyers' demands, consistent with the
        beneficiary files: same organisme, matricules, demand numbers and persons."""
        numorg = "555" if fonorg == "MSA" else "551"
        path = out_dir / f"{fonorg}_{numorg}_INSTRUCTION_{day:%Y%m%d}.xml"
        body = "".join(self._demand_xml(f, n) for n, f in enumerate(foyers, start=1))
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

    def _full_files(self, out_dir: Path, day: date, type_flux: str, compress: bool) -> list[GeneratedFile]:
        files = []
        for fonorg in ("CAF", "MSA"):
            members = [f for f in self.foyers if f.fonorg == fonorg and not f.gone and f.etat != "5"]
            files.append(self.write_file(out_dir, members, type_flux, fonorg, day, day, compress))
        return files

    def run(
        self, out_dir: Path, days: int, compress: bool = False, monthly: bool = True, instruction: bool = False
    ) -> list[GeneratedFile]:
        """`instruction`: also an instruction flux each day for the day's new demands (their contacts, DSP,
        parcours), received the same day as the beneficiary file that brings them; it draws no random
        number, so the beneficiary files are the same with or without it."""
        out_dir.mkdir(parents=True, exist_ok=True)
        last_day = self.start + timedelta(days=days)
        files = self._full_files(out_dir, self.start, "M", compress)
        for g in files:
            g.initial_stock = True
        for offset in range(1, days + 1):
            day = self.start + timedelta(days=offset)
            if day.weekday() >= 5:  # the CAF sends on business days
                continue
            for f in self.foyers:
                f.events = []
                for p in f.persons:
                    p.sdd_entrant = False
            changed_ids = self._day(day)
            if (
                monthly
                and day.day <= 3
                and not any(
                    g.type_flux == "M" and (g.created_on.year, g.created_on.month) == (day.year, day.month)
                    for g in files
                )
            ):
                files.extend(self._full_files(out_dir, day, "M", compress))
            # a file is now and then received a few days late, but never after the run's last day: a run stands
            # for what had arrived by then, and a reception is never dated in the future of the clock that
            # asked for the run (a population ending yesterday is all received by yesterday)
            late = timedelta(days=self.rng.choice([0, 0, 0, 0, 0, 0, 1, 3]))
            received = min(day + late, last_day)
            for fonorg in ("CAF", "MSA"):
                changed = [f for f in self.foyers if id(f) in changed_ids and f.fonorg == fonorg]
                files.append(self.write_file(out_dir, changed, "I", fonorg, day, received, compress))
                new = [f for f in changed if "DEMRSA" in f.events]
                if instruction and new:
                    files.append(self.write_instruction_file(out_dir, new, day, received, fonorg))
            for f in self.foyers:
                if f.etat == "5" and id(f) in changed_ids and f.closure and f.closure[0] == "MUT":
                    f.gone = True
        manifest = [
            {
                "file": g.path.name,
                "type": g.type_flux,
                "organisme": g.fonorg,
                "created_on": g.created_on.isoformat(),
                "received_on": g.received_on.isoformat(),
                "foyers": g.foyers,
                "persons": g.persons,
                "initial_stock": g.initial_stock,
                "nature": g.nature,
            }
            for g in files
        ]
        (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
        return files


def generate(
    out_dir: Path,
    foyers: int,
    days: int,
    start: date,
    seed: int = 1,
    departement: str = "055",
    compress: bool = False,
    monthly: bool = True,
    instruction: bool = False,
) -> list[GeneratedFile]:
    return FluxGenerator(foyers, start, seed, departement).run(out_dir, days, compress, monthly, instruction)


def generate_single(
    path: Path, foyers: int, day: date, seed: int = 1, type_flux: str = "M", departement: str = "055"
) -> GeneratedFile:
    """One full file of `foyers` foyers (benchmarks: a big monthly file)."""
    gen = FluxGenerator(foyers, day, seed, departement, msa_share=0.0)
    return gen.write_file(path.parent, gen.foyers, type_flux, "CAF", day, day, compress=path.suffix == ".gz")
