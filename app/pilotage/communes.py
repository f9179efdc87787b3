"""Commune names and territories for the pilotage breakdowns: the Département's table where it loaded one
(`PASSERELLE_COMMUNES_FILE`), else the names the CAF/MSA files give."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select

from app.errors import NotConfigured
from app.kit.csv import csv_fieldnames, csv_rows
from app.models import PersonState

SMALL_WORDS = {"le", "la", "les", "l", "de", "du", "des", "d", "sur", "sous", "en", "et", "aux", "au", "lès", "lez"}


def commune_title(name: str) -> str:
    """A commune's name as the COG writes it, from the capitals of the CAF files: BAR-LE-DUC -> Bar-le-Duc,
    BELLEVILLE-SUR-MEUSE -> Belleville-sur-Meuse, L'ISLE-EN-RIGAULT -> L'Isle-en-Rigault."""
    parts = re.split(r"([ '\-])", name.strip().lower())
    out = []
    for i, part in enumerate(parts):
        small = (
            part in SMALL_WORDS and i > 0 and not (part in ("l", "d") and i + 1 < len(parts) and parts[i + 1] != "'")
        )
        out.append(part if small or not part or part in " '-" else part[:1].upper() + part[1:])
    return "".join(out)


def commune_names(conn: Connection, departements: list[str], loaded: dict[str, str] | None = None) -> dict[str, str]:
    """INSEE code -> name: the Département's table where it loaded one, else the name the CAF/MSA files give
    (the latest written), in title case."""
    ps = PersonState.__table__.c
    names: dict[str, str] = {}
    for code, name in conn.execute(
        select(ps.numcom, func.max(ps.nomcom))
        .where(ps.departement_code.in_(departements), ps.numcom.is_not(None), ps.nomcom.is_not(None))
        .group_by(ps.numcom)
    ):
        names[code] = commune_title(name)
    names.update(loaded or {})
    return names


def load_communes(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The Département's commune table: CSV `code_insee;nom;territoire` (UTF-8, header line; territoire may
    be empty). Returns (names, territories)."""
    names, territories = {}, {}
    text = path.read_text(encoding="utf-8-sig")
    reader = csv.DictReader(io.StringIO(text), delimiter=";")
    if not csv_fieldnames(reader) or not {"code_insee", "nom"} <= {f.strip() for f in reader.fieldnames or ()}:
        raise ValueError(f"{path.name}: the header must be code_insee;nom;territoire")
    for line, row in enumerate(csv_rows(reader), start=2):
        code = (row.get("code_insee") or "").strip()
        if not re.fullmatch(r"\d[\dAB]\d{3}", code):
            raise ValueError(f"{path.name}, line {line}: {code!r} is not an INSEE commune code")
        names[code] = (row.get("nom") or "").strip() or code
        if (row.get("territoire") or "").strip():
            territories[code] = row["territoire"].strip()
    return names, territories


class CommunesFileError(NotConfigured):
    """The Département's commune table cannot be read: the message names the setting and the line."""

    code = "communes_file_invalid"


def commune_table(
    settings: Any, conn: Connection, departements: list[str]
) -> tuple[dict[str, str], dict[str, str] | None]:
    """Commune names (the Département's table if configured, else the CAF/MSA files') and territories (only
    with a table that gives them)."""
    loaded: dict[str, str] = {}
    territories: dict[str, str] | None = None
    if settings.communes_file is not None:
        try:
            loaded, found = load_communes(settings.communes_file)
        except (OSError, ValueError) as exc:
            raise CommunesFileError(f"PASSERELLE_COMMUNES_FILE: {exc}") from None
        territories = found or None
    return commune_names(conn, departements, loaded), territories
