"""France Travail's return file (seeds/001 Annexe 4, "en retour"): read as France Travail writes it,
matched to persons, stored as dated facts (issue #13).

- **Columns**: the convention's 26 names, as France Travail writes them. Headers are compared without
  case, accents, apostrophe style, spaces or a trailing parenthesis, so "Modalité de suivi et
  d’accompagnement (Msa) Actuelle" (the seed) and "Modalité de suivi et d'accompagnement Actuelle" (SPEC)
  are the same column. A missing column rejects the whole file, naming it; other columns are ignored,
  reported.
- **Text**: `;` or `,`; UTF-8 (with or without BOM) or Windows-1252, detected and reported.
- **Dates**: jj/mm/aaaa or aaaa-mm-jj; a bad date rejects the whole file with its line.
- **Matching**: names (or birth name) + birth date, narrowed by commune (current, else entry) when several
  persons share them. Several still, or none: reported (`ambiguous`, `unmatched`), never guessed.
- **Idempotent**: the same content for the same département is recorded once.
- **Streamed** (issue #23: a 50 MB file took ~2.5 GB held in memory and in one long write): the file stays
  on disk (or in its upload's spool) and is read three times as a stream: its bytes (hash, encoding), its
  rows (validated whole before anything is written: `prepare`, outside the write lock), then again to
  match and store them in batches of `BATCH_ROWS` (`store`, inside the write lock). Memory does not grow
  with the file; the report lists the first `REPORT_MAX_LINES` lines of each problem and counts them all.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import itertools
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import IO, Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from app.clock import today
from app.errors import Unprocessable
from app.kit.csv import csv_rows, iso_date
from app.kit.validation import control_character_problem
from app.models import FtReturnFile, FtReturnRow, Person
from app.persons.keys import normalize_name as _norm
from app.persons.states import states_as_of
from app.settings import Settings

# (our key, the convention's column name); the three first identify the person
COLUMNS = (
    ("nom", "Nom"),
    ("prenom", "Prénom"),
    ("date_naissance", "Date De Naissance"),
    ("tranche_age_actuel", "Tranche Age Actuel"),
    ("obligation_emploi_actuel", "Obligation Emploi Actuel"),
    ("inscription_actuelle", "Inscription Actuelle"),
    ("rome_actuel", "Rome Actuel"),
    ("diagnostic_realise", "Diagnostic Realise (oui/non)"),
    ("commune_entree", "Commune Entree"),
    ("commune_actuelle", "Commune Actuelle"),
    ("libelle_commune_actuelle", "Libelle Commune Actuelle"),
    ("territoire_entree", "Territoire Entree"),
    ("territoire_actuel", "Territoire Actuel"),
    ("departement_actuel", "Departement Actuel"),
    ("agence_dans_xp", "Agence Dans Xp"),
    ("agence", "Agence"),
    ("direction_territoriale_actuelle", "Direction territoriale Actuelle"),
    ("date_entree_parcours", "Date Entree Parcours"),
    ("date_sortie", "Date Sortie"),
    ("motif_sortie", "Motif Sortie"),
    ("libelle_parcours_entree", "Libelle Parcours Entree"),
    ("libelle_parcours_actuel", "Libelle Parcours Actuel"),
    ("modalite_suivi_actuelle", "Modalité de suivi et d’accompagnement (Msa) Actuelle"),
    ("libelle_pni", "Libelle Pni (si suivi délégué à un partenaire non informatisé)"),
    ("libelle_type_suivi_delegue", "Libelle Type de Suivi délégué"),
    ("top_demandeur_emploi_longue_duree", "Top Demandeur d’emploi de Longue Duree"),
)
DATE_COLUMNS = ("date_naissance", "date_entree_parcours", "date_sortie")
BATCH_ROWS = 1000  # rows matched and inserted at a time
REPORT_MAX_LINES = 1000  # lines listed in the report for each problem (all are counted)
CHUNK = 1 << 20


def header_key(name: str) -> str:
    """A header as compared: no case, accents, apostrophes, spaces, nor a parenthesis (the seed's "(Msa)",
    "(oui/non)", "(si suivi délégué…)" are optional)."""
    text = re.sub(r"\(.*?\)", "", name)
    text = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in text if c.isalnum())


KEYS = {header_key(label): key for key, label in COLUMNS}
LABELS = dict(COLUMNS)


class ReturnFileRejected(Unprocessable):
    code = "return_file_rejected"


@dataclass
class ReturnReport:
    file_id: int | None = None
    duplicate: bool = False
    encoding: str = ""
    separator: str = ";"
    rows: int = 0
    matched: int = 0
    ambiguous: list[dict[str, Any]] = field(default_factory=list)  # line and why (no names), the first 1,000
    unmatched: list[dict[str, Any]] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    ambiguous_count: int = 0
    unmatched_count: int = 0

    def note(self, status: str, line: int, reason: str) -> None:
        problems = self.ambiguous if status == "ambiguous" else self.unmatched
        if status == "ambiguous":
            self.ambiguous_count += 1
        else:
            self.unmatched_count += 1
        if len(problems) < REPORT_MAX_LINES:
            problems.append({"line": line, "reason": reason})

    def to_dict(self) -> dict[str, Any]:
        return {
            "file_id": self.file_id,
            "duplicate": self.duplicate,
            "encoding": self.encoding,
            "separator": self.separator,
            "rows": self.rows,
            "matched": self.matched,
            "ambiguous": self.ambiguous,
            "unmatched": self.unmatched,
            "ambiguous_count": self.ambiguous_count,
            "unmatched_count": self.unmatched_count,
            "ignored_columns": self.ignored_columns,
        }


def check_filename(filename: str) -> None:
    """The file's name is stored with it: no NUL or other control character (`ReturnFileRejected`)."""
    problem = control_character_problem(filename)
    if problem:
        raise ReturnFileRejected(f"the file name {problem}", [{"loc": ["body", "file"], "msg": problem}])


def _date(value: str, column: str, line: int) -> str | None:
    value = value.strip()
    if not value:
        return None
    try:
        return iso_date(value, column)
    except ValueError as exc:
        raise ReturnFileRejected(f"line {line}, {exc}", [{"line": line, "column": column}]) from None


@dataclass
class Upload:
    """A return file read once and validated whole (`prepare`), ready to be stored (`store`)."""

    stream: IO[bytes]
    codec: str
    sha256: str
    births: set[str]
    report: ReturnReport


def _decoded_offset(decoder: Any, offset: int, exc: UnicodeDecodeError) -> int:
    return offset - len(decoder.getstate()[0]) + exc.start


def _encoding(stream: IO[bytes]) -> tuple[str, str, str]:
    """(codec, name reported, sha256 of the bytes), read as a stream: UTF-8 with or without BOM, or
    Windows-1252 (Excel's default in France); as `app.kit.csv.decode_csv` tells them, without the whole text."""
    stream.seek(0)
    sha = hashlib.sha256()
    utf8, cp1252 = codecs.getincrementaldecoder("utf-8")(), codecs.getincrementaldecoder("cp1252")()
    bad_utf8: int | None = None
    bad_cp1252: int | None = None
    offset, bom = 0, False
    while data := stream.read(CHUNK):
        if offset == 0 and data.startswith(b"\xef\xbb\xbf"):
            bom = True
        sha.update(data)
        if bad_utf8 is None:
            try:
                utf8.decode(data)
            except UnicodeDecodeError as exc:
                bad_utf8 = _decoded_offset(utf8, offset, exc)
        if bad_cp1252 is None:
            try:
                cp1252.decode(data)
            except UnicodeDecodeError as exc:
                bad_cp1252 = _decoded_offset(cp1252, offset, exc)
        offset += len(data)
    if bad_utf8 is None:
        try:
            utf8.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            bad_utf8 = _decoded_offset(utf8, offset, exc)
    if bom:
        if bad_utf8 is not None:
            raise Unprocessable(f"the file starts with a UTF-8 BOM but is not UTF-8 (byte {bad_utf8})")
        return "utf-8-sig", "utf-8 (BOM)", sha.hexdigest()
    if bad_utf8 is None:
        return "utf-8", "utf-8", sha.hexdigest()
    if bad_cp1252 is None:
        return "cp1252", "windows-1252", sha.hexdigest()
    raise Unprocessable(f"the file is neither UTF-8 nor Windows-1252 (byte {bad_cp1252})")


def _rows(stream: IO[bytes], codec: str, report: ReturnReport) -> Iterator[tuple[int, dict[str, Any]]]:
    """The rows (line, values by our keys), each validated; raises `ReturnFileRejected` naming what. Fills
    the report's separator and ignored columns."""
    stream.seek(0)
    text = io.TextIOWrapper(stream, encoding=codec, newline="")
    try:
        first = text.readline()
        report.separator = ";" if first.count(";") >= first.count(",") else ","
        reader = csv_rows(
            csv.reader(itertools.chain([first] if first else [], text), delimiter=report.separator),
            ReturnFileRejected,
        )
        try:
            header = next(reader)
        except StopIteration:
            raise ReturnFileRejected("the file is empty") from None
        positions: dict[str, int] = {}
        report.ignored_columns = []
        for i, name in enumerate(header):
            key = KEYS.get(header_key(name))
            if key is None:
                report.ignored_columns.append(name.strip())
            elif key not in positions:
                positions[key] = i
        missing = [label for key, label in COLUMNS if key not in positions]
        if missing:
            raise ReturnFileRejected(
                f"line 1: missing column(s): {', '.join(missing)} (separator {report.separator!r})",
                [{"line": 1, "missing": missing}],
            )
        for line, values in enumerate(reader, start=2):
            if not any(v.strip() for v in values):
                continue
            if len(values) < len(header):
                values = values + [""] * (len(header) - len(values))
            row: dict[str, Any] = {key: values[i].strip() for key, i in positions.items()}
            for key, value in row.items():  # a NUL: refused by PostgreSQL, stored by SQLite (issue #23)
                problem = control_character_problem(value)
                if problem:
                    label = LABELS[key]
                    raise ReturnFileRejected(f"line {line}, {label}: {problem}", [{"line": line, "column": label}])
            for key in DATE_COLUMNS:
                row[key] = _date(row[key], dict(COLUMNS)[key], line)
            if not (row["nom"] and row["prenom"] and row["date_naissance"]):
                raise ReturnFileRejected(
                    f"line {line}: Nom, Prénom and Date De Naissance are required to find the person",
                    [{"line": line}],
                )
            yield line, row
    finally:
        text.detach()  # the stream is the caller's


def prepare(data: bytes | IO[bytes]) -> Upload:
    """Read the file whole as a stream and validate every row, before any write: a bad line rejects it
    whole (`ReturnFileRejected`). Keeps only the birth dates (to find candidates) and the counts."""
    stream: IO[bytes] = io.BytesIO(data) if isinstance(data, bytes) else data
    codec, encoding, sha = _encoding(stream)
    report = ReturnReport(encoding=encoding)
    births: set[str] = set()
    for _line, row in _rows(stream, codec, report):
        report.rows += 1
        births.add(row["date_naissance"])
    return Upload(stream, codec, sha, births, report)


def ingest(
    session: Session,
    settings: Settings,
    departement: str,
    filename: str,
    data: bytes | IO[bytes],
    received_by: str | None,
) -> ReturnReport:
    """Parse, match and store (in the caller's write transaction). The same content twice: nothing new."""
    return store(session, settings, departement, filename, prepare(data), received_by)


def store(
    session: Session, settings: Settings, departement: str, filename: str, upload: Upload, received_by: str | None
) -> ReturnReport:
    """Match and store a prepared file (in the caller's write transaction), its rows in batches."""

    check_filename(filename)
    report = upload.report
    known = session.scalar(
        select(FtReturnFile).where(
            FtReturnFile.departement_code == departement, FtReturnFile.content_sha256 == upload.sha256
        )
    )
    if known is not None:
        report.file_id, report.duplicate = known.id, True
        report.matched = known.matched
        return report
    births = sorted(date.fromisoformat(b) for b in upload.births)
    candidates: dict[tuple[str, str], list[int]] = {}
    conn = session.connection()
    if births:
        for pid, nom, nomnai, prenom, born in session.execute(
            select(Person.id, Person.nom, Person.nomnai, Person.prenom, Person.date_naissance).where(
                Person.departement_code == departement, Person.date_naissance.in_(births)
            )
        ):
            for name in {_norm(nom), _norm(nomnai)} - {""}:
                candidates.setdefault((f"{name}|{_norm(prenom)}", str(born)), []).append(pid)
    # the state (commune) only tells apart persons sharing names and birth date
    ids = sorted({pid for pids in candidates.values() if len(set(pids)) > 1 for pid in pids})
    states = states_as_of(conn, ids, today(settings)) if ids else {}
    stored = FtReturnFile(
        departement_code=departement,
        filename=filename[:255],
        content_sha256=upload.sha256,
        received_by=received_by,
        encoding=report.encoding,
        separator=report.separator,
        rows=report.rows,
        matched=0,
        ambiguous=0,
        unmatched=0,
    )
    session.add(stored)
    session.flush()
    batch: list[dict[str, Any]] = []
    for line, row in _rows(upload.stream, upload.codec, ReturnReport()):
        found = sorted(set(candidates.get((f"{_norm(row['nom'])}|{_norm(row['prenom'])}", row["date_naissance"]), [])))
        if len(found) > 1:
            commune = row["commune_actuelle"] or row["commune_entree"]
            narrowed = [p for p in found if commune and states.get(p) is not None and states[p].numcom == commune]
            found = narrowed if len(narrowed) == 1 else found
        if len(found) == 1:
            status, person_id = "matched", found[0]
            report.matched += 1
        elif found:
            status, person_id = "ambiguous", None
            report.note(status, line, f"{len(found)} persons share these names and birth date")
        else:
            status, person_id = "unmatched", None
            report.note(status, line, "no person with these names and birth date")
        batch.append({"file_id": stored.id, "line": line, "person_id": person_id, "status": status, "data": row})
        if len(batch) >= BATCH_ROWS:
            session.execute(insert(FtReturnRow), batch)
            batch = []
    if batch:
        session.execute(insert(FtReturnRow), batch)
    stored.matched, stored.ambiguous, stored.unmatched = report.matched, report.ambiguous_count, report.unmatched_count
    report.file_id = stored.id
    return report


def latest_for_person(session: Session, person_id: int) -> dict[str, Any] | None:
    """What France Travail's latest return file said of the person, with the file's reception."""
    found = session.execute(
        select(FtReturnRow, FtReturnFile)
        .join(FtReturnFile, FtReturnFile.id == FtReturnRow.file_id)
        .where(FtReturnRow.person_id == person_id)
        .order_by(FtReturnFile.received_at.desc(), FtReturnRow.id.desc())
        .limit(1)
    ).first()
    if found is None:
        return None
    row, file = found
    values = {k: v for k, v in row.data.items() if k not in ("nom", "prenom", "date_naissance")}
    return {"fichier": file.filename, "recuLe": file.received_at.isoformat(), "ligne": row.line, **values}
