"""CSV as people write it, shared by every import (orientation events, rdv-insertion users, France Travail's
return file): the text whatever the encoding Excel chose, and dates written the French way; and CSV as French
Excel reads it, written by every export (weekly files, pilotage tables, the audit journal): `;`, UTF-8 with a
BOM, CRLF."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from datetime import date
from typing import Any

from app.errors import Unprocessable

BOM = "\ufeff"
_FR_DATE = re.compile(r"^(\d{2})/(\d{2})/(\d{4})$")


def decode_csv(data: bytes | str) -> tuple[str, str]:
    """The text of a CSV as people write it: UTF-8 with or without BOM, or Windows-1252 (Excel's default in
    France). Detected from the bytes, never guessed silently: the report says which."""
    if isinstance(data, str):
        return data.lstrip("\ufeff"), "utf-8"
    if data.startswith(b"\xef\xbb\xbf"):
        try:
            return data[3:].decode("utf-8"), "utf-8 (BOM)"
        except UnicodeDecodeError as exc:
            raise Unprocessable(f"the file starts with a UTF-8 BOM but is not UTF-8 (byte {exc.start + 3})") from exc
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        try:
            return data.decode("cp1252"), "windows-1252"
        except UnicodeDecodeError as exc:
            raise Unprocessable(f"the file is neither UTF-8 nor Windows-1252 (byte {exc.start})") from exc


def iso_date(value: str, column: str) -> str:
    """A date as people write it (aaaa-mm-jj or jj/mm/aaaa), in ISO form; ValueError naming the column."""
    found = _FR_DATE.match(value)
    if found:
        day, month, year = found.groups()
        value = f"{year}-{month}-{day}"
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise ValueError(f"{column}: {value[:20]!r} is not a date (aaaa-mm-jj or jj/mm/aaaa)") from None


def write_csv(columns: tuple[str, ...], rows: Iterable[list[str]], out: Any) -> int:
    """Write the CSV to the binary stream `out` (a BOM, `;`, CRLF); returns the number of rows."""
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    text.write(BOM)
    writer = csv.writer(text, delimiter=";", lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(columns)
    n = 0
    for row in rows:
        writer.writerow(row)
        n += 1
    text.flush()
    text.detach()
    return n
