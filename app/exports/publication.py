"""What a weekly publication made: the files built and, for the e-mail only, their links (a value shared by
the publishing job and the mail text, so neither imports the other)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Built:
    kind: str
    filename: str
    rows: int
    sha256: str
    size: int
    path: Path
    key_id: str


@dataclass
class Publication:
    departement: str
    week: str
    files: list[Built] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)  # kind -> URL (only in this object, never stored)
    mailed: bool = False
    unchanged: bool = False
    resumed: bool = False  # the same e-mail sent again: a previous run stopped before recording it sent

    def manifest(self) -> dict[str, Any]:
        return {
            "departement": self.departement,
            "semaine": self.week,
            "fichiers": [
                {"type": f.kind, "nom": f.filename, "lignes": f.rows, "sha256": f.sha256, "octets": f.size}
                for f in self.files
            ],
        }
