"""One example per command, shown at the end of its `--help` (issue #26).

Kept here, in one table, rather than in each docstring: `tests/cli/test_help.py` checks that every command
has one, that each names an existing command with options it accepts, and that each fits in 80 columns.
A new command gets its line here.
"""

from __future__ import annotations

from typing import Any

EXAMPLES: dict[str, str] = {
    "serve": "passerelle serve --port 8000",
    "demo": "passerelle demo --foyers 2000 --days 35 --seed 1",
    "dashboard link": 'passerelle dashboard link --departement 055 --name "C. Martin" --minutes 15',
    "purge": "passerelle purge --dry-run",
    "openapi export": "passerelle openapi export --out openapi/openapi.json",
    "fake-ft serve": "passerelle fake-ft serve --port 8900 --seed 1",
    "keys status": "passerelle keys status",
    "keys rotate": "passerelle keys rotate nir",
    "db upgrade": "passerelle db upgrade",
    "db grant": "passerelle db grant --role passerelle",
    "db downgrade": "passerelle db downgrade -1",
    "db current": "passerelle db current",
    "departements add": "passerelle departements add 055 --name Meuse",
    "departements list": "passerelle departements list",
    "clients create": "passerelle clients create --name bi --departement 055 --scope pilotage:read",
    "clients list": "passerelle clients list",
    "clients revoke": "passerelle clients revoke bi",
    "flux ingest": "passerelle flux ingest RSABEM.xml.gz --received-on 2024-03-01",
    "flux list": "passerelle flux list --limit 20",
    "flux freshness": "passerelle flux freshness --as-of 2026-12-08",
    "flux show": "passerelle flux show 12",
    "flux watch": "passerelle flux watch inbox --once",
    "flux generate": "passerelle flux generate --out essai --foyers 200 --days 10 --seed 1",
    "orientations import": "passerelle orientations import orientations.csv",
    "orientations pending": "passerelle orientations pending --departement 055",
    "orientations drop-pending": "passerelle orientations drop-pending 3 --reason 'doublon'",
    "episodes refresh": "passerelle episodes refresh",
    "persons identity-matches": "passerelle persons identity-matches --status open",
    "persons split": "passerelle persons split 7 --reason 'deux personnes'",
    "pilotage orientation": "passerelle pilotage orientation --from 2024-03-01 --to 2024-03-31",
    "pilotage tables": "passerelle pilotage tables",
    "pilotage table": "passerelle pilotage table delais-orientation --periode 2024-03",
    "pilotage extract": "passerelle pilotage extract --periode 2024 -o extrait.csv",
    "pilotage absences": "passerelle pilotage absences --periode 2024-03",
    "webhooks unmatched": "passerelle webhooks unmatched --departement 055",
    "webhooks replay": "passerelle webhooks replay --since 2024-03-01",
    "ft sync": "passerelle ft sync --departement 055 --only-missing --limit 100",
    "ft push": "passerelle ft push --limit 100",
    "ft return-file ingest": "passerelle ft return-file ingest RETOUR.csv --departement 055",
    "export weekly": "passerelle export weekly --week 2024-W10",
    "export cancel": "passerelle export cancel --departement 055 --week 2024-W10",
    "audit accesses": "passerelle audit accesses --person 42 --since 2024-03-01",
    "audit person": "passerelle audit person 42",
    "audit seal": "passerelle audit seal",
    "audit anchor": "passerelle audit anchor",
    "audit checkpoint": "passerelle audit checkpoint",
    "audit keygen": "passerelle audit keygen --public-key audit-public.pem",
    "audit public-key": "passerelle audit public-key",
    "audit verify": "passerelle audit verify",
}


def epilog(example: str) -> str:
    """Click's epilog: `\\b` keeps the example on its own line, never re-wrapped."""
    return f"\b\nExample:\n  {example}"


def add_examples(command: Any, path: tuple[str, ...] = ()) -> None:
    """Give each command of the tree under `command` (a click group) its example, as its epilog."""
    for name, sub in getattr(command, "commands", {}).items():
        key = (*path, name)
        if hasattr(sub, "commands"):
            add_examples(sub, key)
        elif " ".join(key) in EXAMPLES and not sub.epilog:
            sub.epilog = epilog(EXAMPLES[" ".join(key)])
