"""The one place deciding what the annex-4 rules count: versable states, thresholds, windows."""

from __future__ import annotations

from dataclasses import dataclass, field

# ETATDOSRSA: "droit ouvert" (2 versable, 3 suspendu, 4 versement suspendu) and "droit clos" (5 clos,
# 6 clos sur un mois antérieur). Which open states count as versable for the rules: `versable_etats` below.
DROIT_OUVERT = ("2", "3", "4")
DROIT_CLOS = ("5", "6")


@dataclass(frozen=True)
class RulesConfig:
    # ETATDOSRSA values that make a right "versable" (convention: 2 = open and payable). Some départements
    # also count 3, or 4 with some payment-suspension motives: list them in `versable_with_motifs`.
    versable_etats: frozenset[str] = frozenset({"2"})
    versable_with_motifs: dict[str, frozenset[str]] = field(default_factory=dict)
    # A follow-up closes after a suspension longer than this (annex 4: 12 months).
    long_suspension_months: int = 12
    # Oriented "in 15 days or less": the end date is before T0 + 15 days (seed: T0 01/03, letter before 16/03).
    delay_days: int = 15
    # Fallback window of one month: before the same day of the next month.
    fallback_months: int = 1
    # CASF art. D.262-65-2 (décret n° 2024-1244): six weeks from the reception of the information on the opening
    # or the transfer of the right, after which France Travail orients: T0 + 42 days is the first day it may.
    legal_deadline_days: int = 42
    # Roles that can be BRSA subject to droits et devoirs.
    brsa_roles: frozenset[str] = frozenset({"DEM", "CJT", "BEN"})
    # Persons of the initial stock are treated as followed (the "file active"), those whose right is suspended
    # at the stock too (a dormant follow-up, annex 4: "reprennent l'accompagnement"): their follow-up closes
    # like any other (radiation, suspension > 12 months, move out, explicit closure).
    stock_is_followed: bool = True


DEFAULT = RulesConfig()
