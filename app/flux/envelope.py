"""The envelope of a flux file, whatever it carries (beneficiary or instruction records): opening it (plain
or gzip), hashing its bytes as they are read, the prolog check (no DTD, no entity), the hardened streaming
parser, the header (IdentificationFlux) and trailer (TransmissionFlux), and how a whole file is refused.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import zlib
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any

from lxml import etree

from app.flux.records import APPLIEME_CODES, TYPEFLUX_CODES, FluxHeader
from app.settings import FLUX_MAX_DECOMPRESSED_BYTES, FLUX_MAX_ELEMENTS, Settings

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


# What the parser may hold between two records read and freed (a foyer, a demand): a real foyer is ~100
# elements and ~3 KB, the largest a few thousand elements and ~100 KB. The parser builds every element and
# text, even those no event reports, and only a record's end frees what came before it: without these
# bounds a file of unknown elements (or text) and no record grows the tree without end (issue #23: 20
# million elements, 2.7 GB). At ~130 bytes an element (and as much for the whitespace between), the tree
# stays under ~30 MB of elements and 16 MiB of text.
RECORD_MAX_ELEMENTS = 100_000
RECORD_MAX_BYTES = 16 * 1024**2


@dataclass(frozen=True)
class FluxLimits:
    """What one flux file may hold (PASSERELLE_FLUX_MAX_DECOMPRESSED_BYTES, PASSERELLE_FLUX_MAX_ELEMENTS)."""

    max_bytes: int = FLUX_MAX_DECOMPRESSED_BYTES
    max_elements: int = FLUX_MAX_ELEMENTS
    record_max_elements: int = RECORD_MAX_ELEMENTS
    record_max_bytes: int = RECORD_MAX_BYTES

    @classmethod
    def of(cls, settings: Settings) -> FluxLimits:
        return cls(settings.flux_max_decompressed_bytes, settings.flux_max_elements)


def _bytes_text(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size:,} {unit}"
    return f"{n:,} bytes"


class HashingReader:
    """Reads the decompressed XML, hashing it on the way; keeps the head for the prolog check. Counts the
    bytes and the elements (their start tags) as they are read, and refuses the file beyond its limits
    (`too_large`) before the parser sees them: a compressed bomb is stopped by what it expands to, with
    flat memory (gzip decompresses as it is read, one chunk at a time)."""

    def __init__(self, raw: IO[bytes], limits: FluxLimits | None = None) -> None:
        self._raw = raw
        self._sha = hashlib.sha256()
        self._buffer = b""
        self._limits = limits or FluxLimits()
        self._last_lt = False  # the previous chunk ended with "<": a "/", "?" or "!" next is no start tag
        self.bytes_read = 0
        self.elements = 0
        self.elements_since_record = 0
        self.bytes_since_record = 0
        self.lines = 1
        self.eof = False

    def record_freed(self) -> None:
        """The reader freed a record and what came before it: the parser's tree is empty again."""
        self.elements_since_record = 0
        self.bytes_since_record = 0

    def _count(self, data: bytes) -> None:
        """Start tags: every "<" but those of end tags, declarations, comments, CDATA and processing
        instructions. A "<" inside a comment or CDATA is counted too: the count errs on the safe side."""
        starts = data.count(b"<") - data.count(b"</") - data.count(b"<!") - data.count(b"<?")
        if self._last_lt and data[:1] in (b"/", b"!", b"?"):
            starts -= 1
        self._last_lt = data[-1:] == b"<"
        self.elements += starts
        self.elements_since_record += starts
        self.bytes_since_record += len(data)
        limits = self._limits
        if self.bytes_read > limits.max_bytes:
            raise FluxRejected(
                f"the file holds more than {_bytes_text(limits.max_bytes)} of XML once decompressed "
                "(PASSERELLE_FLUX_MAX_DECOMPRESSED_BYTES); it is not read further",
                f"byte {self.bytes_read:,} of the XML",
                "too_large",
            )
        if self.elements > limits.max_elements:
            raise FluxRejected(
                f"the file holds more than {limits.max_elements:,} XML elements (PASSERELLE_FLUX_MAX_ELEMENTS); "
                "it is not read further",
                f"line {self.lines:,}",
                "too_large",
            )
        if self.elements_since_record > limits.record_max_elements or self.bytes_since_record > limits.record_max_bytes:
            raise FluxRejected(
                f"more than {limits.record_max_elements:,} XML elements or {_bytes_text(limits.record_max_bytes)} "
                "without a complete record (InfosFoyerRSA or InfoDemandeRSA) among them: not a flux file; "
                "it is not read further",
                f"line {self.lines:,}",
                "too_large",
            )

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
        self._count(data)
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


def too_deep(exc: etree.XMLSyntaxError) -> FluxRejected | None:
    """libxml2 without huge_tree stops at 256 levels of nesting (a flux file has fewer than 10)."""
    if "excessive depth" not in str(exc.msg or exc).lower():
        return None
    line = exc.position[0] if exc.position else exc.lineno
    return FluxRejected("the XML is nested more than 256 levels deep: not a flux file", f"line {line}", "too_deep")


def syntax_error(exc: etree.XMLSyntaxError, reader: HashingReader, foyers_read: int) -> FluxRejected:
    """The refusal of a file the XML parser stopped on: truncated (cut) or malformed."""
    line = exc.position[0] if exc.position else exc.lineno
    msg = str(exc.msg or exc).split(", line")[0]
    # An error on the very last line of a file read to its end is a cut, not a typo.
    at_end = reader.eof and line is not None and line >= reader.lines
    lowered = msg.lower()
    deep = too_deep(exc)
    if deep is not None:
        return deep
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


# What a cut or corrupt gzip stream raises while it is read (a beneficiary or an instruction file alike).
GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


def gzip_truncated(exc: BaseException, bytes_read: int) -> FluxRejected:
    """The rejection of a file whose gzip stream ended early or is corrupt, at the byte where reading stopped."""
    return FluxRejected(
        f"the gzip stream is truncated or corrupt ({type(exc).__name__})", f"byte {bytes_read}", "truncated"
    )


def peek_nature(path: Path) -> str | None:
    """NATFLUX as the header gives it (None if the first 64 KiB hold none): read before anything else."""
    try:
        with open_flux(path) as raw:
            head = raw.read(HEAD_BYTES)
    except (OSError, EOFError):
        return None
    found = re.search(rb"<NATFLUX>\s*([^<\s]{0,8})\s*</NATFLUX>", head)
    return found.group(1).decode("ascii", "replace") if found else None
