"""The envelope of a flux file, whatever it carries (beneficiary or instruction records): opening it (plain
or gzip), hashing its bytes as they are read, the prolog check (no DTD, no entity), the hardened streaming
parser, the header (IdentificationFlux) and trailer (TransmissionFlux), and how a whole file is refused.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any

from lxml import etree

from app.flux.records import APPLIEME_CODES, TYPEFLUX_CODES, FluxHeader

ROOT = "Racine"
HEADER = "IdentificationFlux"
FOYER = "InfosFoyerRSA"
TRAILER = "TransmissionFlux"
HEAD_BYTES = 65536
DOCTYPE_RE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)

# Severities of a record problem.
WARNING = "warning"  # applied as read (the field may be emptied), listed in the report
REJECT_PERSON = "reject_person"  # this person is not applied, listed
REJECT_FOYER = "reject_foyer"  # this foyer is not applied, listed


class FluxRejected(Exception):
    """The whole file is refused; nothing of it is applied."""

    def __init__(
        self,
        reason: str,
        position: str | None = None,
        code: str = "invalid_file",
        foyers_read: int = 0,
        departement: str | None = None,
    ) -> None:
        super().__init__(f"{reason}" + (f" (at {position})" if position else ""))
        self.reason = reason
        self.position = position
        self.code = code
        # what the reader knew when it refused the file, for the report (issue #9: "foyers 0, departement null")
        self.foyers_read = foyers_read
        self.departement = departement


class HashingReader:
    """Reads the decompressed XML, hashing it on the way; keeps the head for the prolog check."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._sha = hashlib.sha256()
        self._buffer = b""
        self.bytes_read = 0
        self.lines = 1
        self.eof = False

    def head(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = self._raw.read(n - len(self._buffer))
            if not chunk:
                break
            self._buffer += chunk
        return self._buffer[:n]

    def read(self, n: int = -1) -> bytes:
        if self._buffer:
            if n < 0 or n >= len(self._buffer):
                data, self._buffer = self._buffer, b""
                if n < 0:
                    data += self._raw.read()
            else:
                data, self._buffer = self._buffer[:n], self._buffer[n:]
        else:
            data = self._raw.read(n)
        self._sha.update(data)
        self.bytes_read += len(data)
        self.lines += data.count(b"\n")
        if not data and n != 0:
            self.eof = True
        return data

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()


def open_flux(path: Path) -> IO[bytes]:
    """Open a flux file, transparently decompressing gzip (detected by its magic bytes, not its name)."""
    fh = open(path, "rb")  # noqa: SIM115 - closed by the caller
    magic = fh.read(2)
    fh.seek(0)
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[return-value]
    return fh


def check_prolog(reader: HashingReader) -> bytes:
    """The head of the file: refused when empty or when a DTD or entity declaration comes before the root."""
    head = reader.head(HEAD_BYTES)
    if not head.strip():
        raise FluxRejected("the file is empty", None, "empty")
    root_at = head.find(b"<" + ROOT.encode())
    doctype = DOCTYPE_RE.search(head)
    if doctype and (root_at < 0 or doctype.start() < root_at):
        raise FluxRejected("a DTD or entity declaration is not allowed in a flux file", "prolog", "forbidden_dtd")
    return head


def syntax_error(exc: etree.XMLSyntaxError, reader: HashingReader, foyers_read: int) -> FluxRejected:
    """The refusal of a file the XML parser stopped on: truncated (cut) or malformed."""
    line = exc.position[0] if exc.position else exc.lineno
    msg = str(exc.msg or exc).split(", line")[0]
    # An error on the very last line of a file read to its end is a cut, not a typo.
    at_end = reader.eof and line is not None and line >= reader.lines
    lowered = msg.lower()
    truncated = at_end or "end of data" in lowered or "premature" in lowered
    code = "truncated" if truncated else "malformed_xml"
    return FluxRejected(
        f"the XML is {'truncated' if code == 'truncated' else 'malformed'}: {msg}" + f" after foyer {foyers_read}",
        f"line {line}",
        code,
    )


def check_top_level(el: Any, parent: Any) -> None:
    """A header, foyer or trailer is a child of the root, and the root is <Racine>."""
    if parent is None or parent.getparent() is not None:
        raise FluxRejected(f"<{el.tag}> must be a child of <{ROOT}>", f"line {el.sourceline}", "invalid_structure")
    if parent.tag != ROOT:
        raise FluxRejected(f"the root element must be <{ROOT}>, not <{parent.tag}>", "line 1", "wrong_root")


def text_of(el: Any, path: str) -> str | None:
    value = el.findtext(path)
    return (value.strip() or None) if value is not None else None


def parse_header(el: Any) -> FluxHeader:
    applieme = text_of(el, "APPLIEME")
    type_flux = text_of(el, "TYPEFLUX")
    if type_flux not in TYPEFLUX_CODES:
        raise FluxRejected(f"TYPEFLUX must be I, M or R, got {type_flux!r}", HEADER, "invalid_header")
    if applieme is None:
        raise FluxRejected("APPLIEME is missing", HEADER, "invalid_header")
    if applieme not in APPLIEME_CODES:
        applieme = applieme[:10]
    created_raw = text_of(el, "DTCREAFLUX") or ""
    try:
        created = date.fromisoformat(created_raw[:10])
    except ValueError:
        raise FluxRejected("DTCREAFLUX is missing or not a date", HEADER, "invalid_header") from None
    time_raw = text_of(el, "HEUCREAFLUX") or "00:00:00"
    try:
        hh, mm, ss = (int(x) for x in time_raw[:8].split(":"))
        created_at = datetime(created.year, created.month, created.day, hh, mm, ss)
    except ValueError:
        created_at = datetime(created.year, created.month, created.day)
    dtref_raw = text_of(el, "DTREF")
    try:
        dtref = date.fromisoformat(dtref_raw[:10]) if dtref_raw else None
    except ValueError:
        dtref = None
    return FluxHeader(
        applieme=applieme,
        version=text_of(el, "NUMVERSIONAPPLIEME"),
        type_flux=type_flux,
        nat_flux=text_of(el, "NATFLUX"),
        created_at=created_at,
        dtref=dtref,
    )


NATURES = {"D": "a beneficiary flux", "I": "an instruction flux (VIRS0901)", "R": "a nouveau recueil flux"}


def nature_message(nature: str | None) -> str:
    if nature is None:
        return "NATFLUX is missing: the nature of the flux (D beneficiary, I instruction) cannot be told"
    what = NATURES.get(nature, "a flux of an unknown nature")
    return f"NATFLUX {nature[:8]!r}: this is {what}, not a beneficiary flux (D); it is not applied"


def count_of(el: Any, name: str) -> int | None:
    raw = text_of(el, name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise FluxRejected(f"{name} is not a number", TRAILER, "invalid_trailer")
    return int(raw)


def safe_iterparse(reader: Any, tags: tuple[str, ...]) -> Any:
    """lxml's streaming parser as every flux is read: "end" events of these tags only, no entity, no DTD,
    no network, no huge tree (a hostile file is refused, never expanded)."""
    return etree.iterparse(
        reader,
        events=("end",),
        tag=tags,
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
