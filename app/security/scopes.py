"""The scopes a caller can hold; every route declares the one it needs."""

from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    flux_write = "flux:write"
    persons_read = "persons:read"
    orientation_write = "orientation:write"
    ft_read = "ft:read"
    ft_write = "ft:write"
    exports_run = "exports:run"
    exports_read = "exports:read"
    pilotage_read = "pilotage:read"
    audit_read = "audit:read"
    admin = "admin"


ALL_SCOPES = frozenset(s.value for s in Scope)


def parse_scopes(values: list[str] | tuple[str, ...]) -> list[str]:
    """Validate scope names given by an operator; unknown ones are an error, not silently dropped."""
    unknown = sorted(set(values) - ALL_SCOPES)
    if unknown:
        raise ValueError(f"unknown scope(s): {', '.join(unknown)}; known: {', '.join(sorted(ALL_SCOPES))}")
    return sorted(set(values))
