"""CSV as people write it, shared by every import (orientation events, rdv-insertion users, France Travail's
return file): the text whatever the encoding Excel chose, and dates written the French way; and CSV as French
Excel reads it, written by every export (weekly files, pilotage tables, the audit journal): `;`, UTF-8 with a
BOM, CRLF."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from datetime import date
from typing import Any

from app.errors import Unprocessable

BOM = "\ufeff"
_FR_DATE = re.compile(r"^(\d{2})/(\d{2})/(\d{4})$")


def decode_csv(data: bytes | str) -> tuple[str, str]:
    """The text of a CSV as people write it: UTF-8 with or without BOM, or Windows-1252 (Excel's default in
    France). Detected from the bytes, never guessed silently: the report says which. A file of both (lines
    pasted from another file: UTF-8 accents on some lines, Windows-1252 on others) is refused naming the
    first line of the fewer, never read as mojibake (issue #23)."""
    if isinstance(data, str):
        return data.lstrip("\ufeff"), "utf-8"
    if data.startswith(b"\xef\xbb\xbf"):
        try:
            return data[3:].decode("utf-8"), "utf-8 (BOM)"
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start + 3) + 1
            raise Unprocessable(
                f"the file starts with a UTF-8 BOM but line {line} is not UTF-8 (byte {exc.start + 3}): "
                "nothing imported; save the whole file again in one encoding"
            ) from exc
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        _refuse_mixed(data)
        try:
            return data.decode("cp1252"), "windows-1252"
        except UnicodeDecodeError as exc:
            raise Unprocessable(f"the file is neither UTF-8 nor Windows-1252 (byte {exc.start})") from exc


def _refuse_mixed(data: bytes) -> None:
    """A file that is not UTF-8 as a whole but has lines with UTF-8 accents: two encodings, refused."""
    utf8_lines: list[int] = []
    other_lines: list[int] = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if line.isascii():
            continue
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            other_lines.append(number)
        else:
            utf8_lines.append(number)
    if utf8_lines and other_lines:
        if len(other_lines) <= len(utf8_lines):
            odd, said, rest = other_lines, "is not UTF-8", "UTF-8"
        else:
            odd, said, rest = utf8_lines, "is in UTF-8", "Windows-1252"
        more = f" (and {len(odd) - 1} other line(s))" if len(odd) > 1 else ""
        raise Unprocessable(
            f"mixed encodings: line {odd[0]}{more} {said} while the rest of the file is {rest}: "
            "nothing imported; save the whole file again in one encoding",
            [{"loc": ["file", "line", odd[0]], "msg": "mixed encodings"}],
            code="mixed_encodings",
        )


class CsvUnreadable(Unprocessable, ValueError):
    """A CSV the csv module cannot read (a field longer than its limit, 131,072 characters): the message names
    the line. A 422 over HTTP, exit 1 (input rejected) on the command line."""


def _unreadable(reader: Any, exc: csv.Error, rejected: type[Unprocessable]) -> Unprocessable:
    line = getattr(reader, "reader", reader).line_num  # a DictReader's own line_num lags behind on an error
    if "field limit" in str(exc):
        problem = f"a field is longer than {csv.field_size_limit()} characters"
    else:
        problem = f"the CSV cannot be read ({exc})"
    return rejected(f"line {line}: {problem}", [{"line": line}])


def csv_fieldnames(reader: Any, rejected: type[Unprocessable] = CsvUnreadable) -> list[str] | None:
    """A `csv.DictReader`'s header, read; a line the csv module refuses raises `rejected` naming it."""
    try:
        names: list[str] | None = reader.fieldnames
    except csv.Error as exc:
        raise _unreadable(reader, exc, rejected) from None
    return names


def csv_rows(reader: Any, rejected: type[Unprocessable] = CsvUnreadable) -> Iterator[Any]:
    """The rows of a `csv.reader` or `csv.DictReader`; a line the csv module refuses (a field over its limit)
    raises `rejected` naming the line, never a raw `csv.Error` (a 500, exit 4; issue #23). Every CSV the
    service reads goes through here."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _unreadable(reader, exc, rejected) from None
        yield row


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


# CSV injection (OWASP, issue #23): a spreadsheet takes a cell starting with one of these for a formula.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# A plain number (a negative count, a delay, a ratio, a percentage as the service writes them) is no
# formula and stays as it is; dates (aaaa-mm-jj, jj/mm/aaaa) start with a digit and are never touched.
_PLAIN_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)?(?:[eE][+-]?\d+)?(?:[ \u00a0\u202f]?%)?")


def safe_cell(value: Any) -> Any:
    """A cell Excel or LibreOffice will not run: a text starting with `=`, `+`, `-`, `@`, a tab or a carriage
    return gets a single quote in front (OWASP's CSV-injection guidance), so it reads as the text it is
    (`'=HYPERLINK(...)`), unless it is a plain number (`-3`, `-0,5`, `12,5 %`). Other values pass as given."""
    if isinstance(value, str) and value.startswith(FORMULA_START) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def _writer(text: Any) -> Any:
    return csv.writer(text, delimiter=";", lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)


def write_csv(columns: Iterable[str], rows: Iterable[Iterable[Any]], out: Any) -> int:
    """Write the CSV to the binary stream `out` (a BOM, `;`, CRLF, every cell through `safe_cell`); returns
    the number of rows. Every CSV the service writes goes through here or `iter_csv`."""
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    text.write(BOM)
    writer = _writer(text)
    writer.writerow([safe_cell(c) for c in columns])
    n = 0
    for row in rows:
        writer.writerow([safe_cell(c) for c in row])
        n += 1
    text.flush()
    text.detach()
    return n


def iter_csv(columns: Iterable[str], rows: Iterable[Iterable[Any]], chunk_rows: int = 2000) -> Iterator[bytes]:
    """The same CSV as `write_csv`, streamed: bytes every `chunk_rows` rows, memory flat."""
    buffer = io.StringIO()
    writer = _writer(buffer)
    buffer.write(BOM)
    writer.writerow([safe_cell(c) for c in columns])
    for n, row in enumerate(rows, start=1):
        writer.writerow([safe_cell(c) for c in row])
        if n % chunk_rows == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()
