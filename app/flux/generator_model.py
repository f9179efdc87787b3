"""What the flux generator (`app.flux.generator`) simulates and writes: its persons, foyers and files."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import NamedTuple


class Cedant(NamedTuple):
    """The organisme a foyer transferred in from (OrganismeCedant)."""

    fonorg: str
    numorg: str
    matricule: str
    arrival: date


class Prenant(NamedTuple):
    """The organisme a foyer transferred out to (OrganismePrenant)."""

    fonorg: str
    numorg: str
    departure: date


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
    cedant: Cedant | None = None
    prenant: Prenant | None = None
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
