"""A record's problems and typed values: `RecordContext` reads text, dates, flags and codes of a record
(foyer, person, demand), and collects its problems, each prefixed with where it is."""

from __future__ import annotations

from datetime import date

from app.flux.envelope import WARNING


class RecordContext:
    """Collects a record's problems, each prefixed with where it is (written only when a problem occurs)."""

    __slots__ = ("foyer", "line", "person", "person_line", "problems")

    def __init__(self, foyer: int | None = None, line: int | None = None) -> None:
        self.problems: list[tuple[str, str, str]] = []  # (severity, code, message)
        self.foyer, self.line = foyer, line
        self.person: int | None = None
        self.person_line: int | None = None

    @property
    def where(self) -> str:
        if self.foyer is None:
            return ""
        if self.person is None:
            return f"foyer {self.foyer}" + (f" (line {self.line})" if self.line else "")
        return (
            f"foyer {self.foyer}"
            + (f" (line {self.person_line})" if self.person_line else "")
            + f", person {self.person}"
        )

    def add(self, severity: str, code: str, message: str) -> None:
        where = self.where
        self.problems.append((severity, code, f"{where}: {message}" if where else message))

    @staticmethod
    def text(raw: str | None) -> str | None:
        if raw is None:
            return None
        raw = raw.strip()
        return raw or None

    def date(self, raw: str | None, name: str) -> date | None:
        if raw is None:
            return None
        try:
            return date.fromisoformat(raw)
        except ValueError:
            raw = raw.strip()
            if not raw or raw == "ABS":  # VRSD0301 writes an absent date "ABS"
                return None
            try:
                return date.fromisoformat(raw[:10])
            except ValueError:
                # The value is not repeated: it may be a birth date, and reports are printed and stored.
                self.add(WARNING, "invalid_date", f"{name} is not a valid date; ignored")
                return None

    def flag(self, raw: str | None, name: str) -> bool | None:
        """An `xsd:boolean`: `1`/`true` or `0`/`false`."""
        if raw == "1":
            return True
        if raw == "0":
            return False
        raw = self.text(raw)
        if raw is None:
            return None
        # xsd:boolean: the schema allows both spellings, and real files use both (formats/caf-flux.md).
        if raw in _TRUE:
            return True
        if raw in _FALSE:
            return False
        self.add(WARNING, "invalid_flag", f"{name} must be 0, 1, true or false, got {raw[:10]!r}; ignored")
        return None

    def code(self, raw: str | None, name: str, known: frozenset[str]) -> str | None:
        if raw is not None and raw in known:
            return raw
        raw = self.text(raw)
        if raw is not None and raw not in known:
            self.add(WARNING, "unknown_code", f"{name} has the unknown code {raw[:20]!r}; kept as is")
        return raw


_TRUE = frozenset({"1", "true"})
_FALSE = frozenset({"0", "false"})
