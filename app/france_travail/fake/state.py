"""The fake France Travail's state: its population (derived from the NIR and the seed), the tokens it
issued, what it received, and the faults it was told to make."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Faults:
    """What the fake does wrong, by probability per call (0 to 1) or fixed values."""

    latency_ms: int = 0  # added to every API call
    latency_jitter_ms: int = 0
    rate_503: float = 0.0
    rate_500: float = 0.0  # an internal error (not retried: the call may have been carried out)
    rate_r999: float = 0.0
    rate_429: float = 0.0
    retry_after: int | None = 1  # seconds given with a 429; None: no Retry-After header
    rate_malformed: float = 0.0  # a 200 whose body is not JSON
    rate_reset: float = 0.0  # the connection is closed without an answer
    token_latency_ms: int = 0
    token_expires_in: int = 1499
    jeton_ttl_seconds: int = 86400
    error_persons_percent: int = 0  # this share of the population is answered R998 (a service in error)
    # scopes the token endpoint refuses with invalid_scope (a scope France Travail has not provisioned for the
    # client, e.g. ["orientationusager"]): the other APIs' tokens are given as usual
    refused_scopes: list[str] = field(default_factory=list)


@dataclass
class FakeState:
    seed: int = 1
    client_id: str = "passerelle-fake"
    client_secret: str = "fake-secret"  # noqa: S105 - the fake's own, documented
    faults: Faults = field(default_factory=Faults)
    tokens: dict[str, tuple[float, frozenset[str]]] = field(default_factory=dict)
    calls: int = 0
    tokens_issued: int = 0  # since the last reset (several processes share one token: issue #27)
    diagnostics_saved: list[dict[str, Any]] = field(default_factory=list)
    orientations: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # NIR -> orientations received
    # NIR -> what lectureOrientation answers for it, set by a test or the demo (`POST /_fake/orientations`):
    # a list of orientations in France Travail's shape, or None for a 204; otherwise drawn (answers.py)
    known_orientations: dict[str, list[dict[str, Any]] | None] = field(default_factory=dict)
    call_times: list[float] = field(default_factory=list)  # when each API call arrived (monotonic)

    def kind(self, nir13: str) -> str:
        """Who a NIR is at France Travail, the same for a seed: 70 % known and certified, 10 % known not
        certified, 10 % unknown, 5 % several matches, 5 % not attached to the caller's structure (R002);
        `error_persons_percent` of them (taken from the top) are answered R998 instead."""
        n = int(hashlib.sha256(f"{self.seed}|{nir13}".encode()).hexdigest(), 16) % 100
        if n >= 100 - self.faults.error_persons_percent:
            return "error"
        if n < 70:
            return "certified"
        if n < 80:
            return "not_certified"
        if n < 90:
            return "unknown"
        if n < 95:
            return "ambiguous"
        return "not_attached"

    def stats(self) -> dict[str, Any]:
        """Calls received, and the most started in any one-second window (to check a client's rate cap)."""
        return {
            "calls": self.calls,
            "tokens_issued": self.tokens_issued,
            "max_calls_in_one_second": most_in_one_second(self.call_times),
            "orientations": sum(len(v) for v in self.orientations.values()),
            "diagnostics_saved": len(self.diagnostics_saved),
        }

    def reset(self) -> None:
        """Forget the calls and what was received (the tokens and the faults stay)."""
        self.calls = 0
        self.tokens_issued = 0
        self.call_times.clear()
        self.orientations.clear()
        self.known_orientations.clear()
        self.diagnostics_saved.clear()


def most_in_one_second(times: list[float]) -> int:
    """The most moments of `times` (seconds) that fall in any one-second window."""
    ordered, most, first = sorted(times), 0, 0
    for last, at in enumerate(ordered):
        while at - ordered[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most
