"""Generator of realistic, fictitious CAF/MSA flux files (VRSB0801) for tests, demos and benchmarks.

It simulates a département's RSA population: a monthly stock file (one per organisme), then one daily
file per business day with what changed — new demands, entries into and exits from the droits et
devoirs, short and long suspensions, closures and returns, transfers in and out, conjoints joining and
leaving, children, MSA foyers, persons without NIR — and a full monthly file at each month's start.
Deterministic for a given seed. A `manifest.json` lists the files with the date the Département
received each one (not in the files themselves).
"""

from __future__ import annotations

import json
import random
from datetime import date, timedelta
from pathlib import Path

from app.flux import generator_xml
from app.flux.generator_model import Cedant, GeneratedFile, GenFoyer, GenPerson, Prenant

__all__ = ["FluxGenerator", "GenFoyer", "GenPerson", "GeneratedFile", "generate", "generate_single"]

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

    # -- life: one day's events, in the order they are drawn ---------------------------------

    def _active(self) -> list[GenFoyer]:
        return [f for f in self.foyers if not f.gone]

    def _day(self, day: date) -> set[int]:
        """Apply one day's events; return the ids of the foyers that changed. The steps run in a fixed
        order and each draws its random numbers in turn: that order is what makes a seed's files."""
        changed: set[int] = set()
        active = self._active()  # the foyers of the day before: today's new ones have no other event
        self._new_demands(day, changed)
        self._transfers_in(day, changed)
        if not active:
            return changed
        self._droits_et_devoirs(active, changed)
        self._short_suspensions(day, active, changed)
        self._resumptions(day, active, changed)
        self._closures(day, active, changed)
        self._transfers_out(day, active, changed)
        self._returns(day, active, changed)
        self._conjoints_joining(day, active, changed)
        self._conjoints_leaving(active, changed)
        self._births(day, active, changed)
        return changed

    def _count(self, rate: float) -> int:
        """How many of an event happen today: `rate` per initial foyer, the fraction drawn (one draw)."""
        expected = rate * max(self.initial_foyers, 1)
        whole = int(expected)
        return whole + (1 if self.rng.random() < expected - whole else 0)

    @staticmethod
    def _touch(f: GenFoyer, event: str, changed: set[int]) -> None:
        f.events.append(event)
        changed.add(id(f))

    def _new_demands(self, day: date, changed: set[int]) -> None:
        """First-time demanders (most SDD)."""
        for _ in range(self._count(0.0020)):
            f = self._new_foyer(day)
            for p in f.persons:
                p.sdd_entrant = p.sdd
            f.dtdemrsa = day - timedelta(days=self.rng.randint(3, 20))
            self.foyers.append(f)
            self._touch(f, "DEMRSA", changed)
            if any(p.sdd for p in f.persons):
                f.events.append("ENTDED")

    def _transfers_in(self, day: date, changed: set[int]) -> None:
        """SDD persons who just moved into the département."""
        rng = self.rng
        for _ in range(self._count(0.0003)):
            f = self._new_foyer(day, msa=False)
            f.cedant = Cedant("CAF", rng.choice(["541", "571", "081", "751"]), f"{rng.randint(1, 9_999_999):07d}", day)
            for p in f.persons:
                p.sdd_entrant = p.sdd
            self.foyers.append(f)
            self._touch(f, "MUT", changed)

    def _droits_et_devoirs(self, active: list[GenFoyer], changed: set[int]) -> None:
        """Entries into and exits from the droits et devoirs (income around 500 €)."""
        rng = self.rng
        for _ in range(self._count(0.0025)):
            f = rng.choice(active)
            adults = [p for p in f.persons if p.role in ("DEM", "CJT")]
            if f.etat != "2" or not adults:
                continue
            p = rng.choice([a for a in adults if a.oscillates] or adults)
            p.sdd = not p.sdd
            p.sdd_entrant = p.sdd
            self._touch(f, "ENTDED" if p.sdd else "SITPRO", changed)

    def _short_suspensions(self, day: date, active: list[GenFoyer], changed: set[int]) -> None:
        """Short suspensions (a missing quarterly declaration), each with the day it ends."""
        rng = self.rng
        for _ in range(self._count(0.0008)):
            f = rng.choice(active)
            if f.etat == "2":
                f.etat = "4"
                f.susp_versement = (rng.choice(["06", "01", "AB"]), day)
                f.resume_on = day + timedelta(days=rng.randint(10, 75))
                self._touch(f, "SUS", changed)

    def _resumptions(self, day: date, active: list[GenFoyer], changed: set[int]) -> None:
        """Short suspensions ending, and long ones (> 12 months) coming back: nouveaux entrants again."""
        for f in active:
            if f.etat == "4" and f.resume_on is not None and f.resume_on <= day:
                f.etat, f.susp_versement, f.resume_on = "2", None, None
                self._touch(f, "SUS", changed)
        long_suspended = [f for f in active if f.etat == "4" and f.resume_on is None]
        for f in self.rng.sample(long_suspended, k=min(len(long_suspended), self._count(0.0003))):
            f.etat, f.susp_versement = "2", None
            for p in f.persons:
                p.sdd_entrant = p.sdd
            self._touch(f, "SUS", changed)

    def _closures(self, day: date, active: list[GenFoyer], changed: set[int]) -> None:
        """Closures (radiation) of open or suspended rights."""
        rng = self.rng
        for _ in range(self._count(0.0012)):
            f = rng.choice(active)
            if f.etat in ("2", "4") and not f.gone:
                f.etat = "5"
                f.closure = (rng.choice(["RFD", "RAU", "PCG", "EFF"]), day)
                f.closed_since = day
                f.susp_versement = None
                self._touch(f, "RAD", changed)

    def _transfers_out(self, day: date, active: list[GenFoyer], changed: set[int]) -> None:
        """Foyers leaving for another organisme (closure MUT; `run` stops sending them after today)."""
        rng = self.rng
        for _ in range(self._count(0.0003)):
            f = rng.choice(active)
            if f.etat == "2":
                f.etat = "5"
                f.closure = ("MUT", day)
                f.prenant = Prenant("CAF", rng.choice(["541", "571", "751"]), day)
                self._touch(f, "MUT", changed)

    def _returns(self, day: date, active: list[GenFoyer], changed: set[int]) -> None:
        """Radiés coming back: a new demand for the same foyer, more than 20 days after the closure."""
        closed = [f for f in active if f.etat == "5" and f.closure and f.closure[0] != "MUT"]
        for f in self.rng.sample(closed, k=min(len(closed), self._count(0.0002))):
            if f.closed_since and (day - f.closed_since).days > 20:
                self._numdem += 1
                f.numdemrsa = f"{self.departement[1:]}{self._numdem:09d}"
                f.etat, f.closure, f.closed_since = "2", None, None
                f.dtdemrsa = day - timedelta(days=5)
                for p in f.persons:
                    p.sdd_entrant = p.sdd
                self._touch(f, "DEMRSA", changed)

    def _conjoints_joining(self, day: date, active: list[GenFoyer], changed: set[int]) -> None:
        for _ in range(self._count(0.0004)):
            f = self.rng.choice(active)
            if f.etat == "2" and not any(p.role == "CJT" for p in f.persons):
                cjt = self._person("CJT", day)
                cjt.sdd_entrant = cjt.sdd
                f.persons.insert(1, cjt)
                f.sitfam = "VIM"
                self._touch(f, "SITFAM", changed)

    def _conjoints_leaving(self, active: list[GenFoyer], changed: set[int]) -> None:
        for _ in range(self._count(0.0002)):
            f = self.rng.choice(active)
            if f.etat == "2" and any(p.role == "CJT" for p in f.persons):
                f.persons = [p for p in f.persons if p.role != "CJT"]
                f.sitfam = "SEF"
                self._touch(f, "SITFAM", changed)

    def _births(self, day: date, active: list[GenFoyer], changed: set[int]) -> None:
        for _ in range(self._count(0.0002)):
            f = self.rng.choice(active)
            if f.etat == "2":
                f.persons.append(self._person("ENF", day, (0, 0)))
                self._touch(f, "SITENFAUT", changed)

    # -- files (the XML itself: app.flux.generator_xml) ---------------------------------------

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
        return generator_xml.write_file(
            out_dir, foyers, type_flux, fonorg, day, received_on, self.departement, compress, encoding
        )

    def write_instruction_file(
        self, out_dir: Path, foyers: list[GenFoyer], day: date, received_on: date, fonorg: str = "CAF"
    ) -> GeneratedFile:
        """An instruction flux (VIRS0901, NATFLUX I) for these foyers' demands, consistent with the
        beneficiary files: same organisme, matricules, demand numbers and persons."""
        return generator_xml.write_instruction_file(out_dir, foyers, day, received_on, self.departement, fonorg)

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
        _write_manifest(out_dir, files)
        return files


def _write_manifest(out_dir: Path, files: list[GeneratedFile]) -> None:
    """`manifest.json`: every file written, with the date the Département received it."""
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
