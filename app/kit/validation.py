"""Input hygiene: no NUL or other C0 control character where a person's text goes; every date a caller gives
between FIRST_DAY and LAST_DAY.

PostgreSQL refuses NUL in text (a 500 if it reached the database) and SQLite stores it silently; control
characters also break CSV files, logs and the France Travail headers. They are refused at the edge with a
422 naming the field. Tab, carriage return and newline are allowed only in fields declared multi-line.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")
_CONTROLS_MULTILINE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def control_character_problem(value: str, multiline: bool = False) -> str | None:
    """A sentence saying what is wrong with `value`, or None."""
    found = (_CONTROLS_MULTILINE if multiline else _CONTROLS).search(value)
    if found is None:
        return None
    char = found.group()
    name = "NUL" if char == "\x00" else f"U+{ord(char):04X}"
    return f"contains a control character ({name}) at position {found.start() + 1}"


# Every date a caller gives (a query string, a form, a period) lies between these: a day after 9999-12-31 does
# not exist, and `until=9999-12-31` or `as_of=9999-12-31` left the calendar in the day-after arithmetic of a
# search or a table (a 500; issue #23). No RSA before 1900, and a millennium of margin after today.
FIRST_DAY = date(1900, 1, 1)
LAST_DAY = date(2999, 12, 31)


def day_range_problem(day: date) -> str | None:
    """A sentence saying why `day` is refused, or None."""
    if FIRST_DAY <= day <= LAST_DAY:
        return None
    return f"a date between {FIRST_DAY.isoformat()} and {LAST_DAY.isoformat()} is expected"


# The same rules, as the JSON schema of the API says them (OpenAPI: clients and schemathesis read them).
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]*$"
MULTILINE_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"


def _declare_text_rules(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    """Every free-text property of an input model says, as a pattern, that it refuses control characters."""
    multiline: frozenset[str] = getattr(cls, "multiline_fields", frozenset())
    for name, prop in schema.get("properties", {}).items():
        for part in (prop, *prop.get("anyOf", ())):
            if part.get("type") == "string" and not {"pattern", "format", "enum", "const"} & set(part):
                part["pattern"] = MULTILINE_PATTERN if name in multiline else TEXT_PATTERN


class InputModel(BaseModel):
    """Base of every model that reads what a caller sent."""

    model_config = ConfigDict(json_schema_extra=_declare_text_rules)
    multiline_fields: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="after")
    @classmethod
    def _no_control_characters(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            problem = control_character_problem(value, info.field_name in cls.multiline_fields)
            if problem:
                raise ValueError(problem)
        return value
