"""France Travail's failures as the caller is told them, each carrying its code, HTTP status and exit code
(app.errors): not configured (503), unavailable (503 with Retry-After: nothing is lost, retry later), or
an answer that is a refusal (502). The client's own `FranceTravailError` (app.clients.france_travail) never
reaches a caller: app.france_travail.service turns it into an exchange's outcome."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from app.errors import Conflict, ExitCode, NotConfigured, PasserelleError, Unavailable
from app.settings import Settings

if TYPE_CHECKING:
    from app.france_travail.service import Exchange


class FranceTravailUnavailableError(PasserelleError):
    status_code = 503
    code = "france_travail_unavailable"
    exit_code = ExitCode.ENVIRONMENT


class FranceTravailNotConfiguredError(NotConfigured):
    code = "france_travail_not_configured"


class FranceTravailAnswerError(Unavailable):
    code = "france_travail_error"


NOT_CONFIGURED = (
    "France Travail is not configured on this service (PASSERELLE_FT_AUTH_URL, _API_URL, _CLIENT_ID, "
    "_CLIENT_SECRET); what is already known stays readable at GET …/france-travail."
)


def unavailable(ex: Exchange, settings: Settings) -> FranceTravailUnavailableError:
    """France Travail did not answer: retry after the circuit's cool-down (Retry-After)."""
    retry = max(1, math.ceil(settings.ft_circuit_cooldown_seconds))
    error = FranceTravailUnavailableError(
        f"France Travail did not answer in time ({ex.message}); nothing is lost: retry later.",
        {"retry_after": retry},
    )
    error.headers = {"Retry-After": str(retry)}
    return error


def raise_for_service(ex: Exchange, settings: Settings) -> None:
    """France Travail as a whole failed (not this person's answer): 503 when it did not answer, 502 when its
    token endpoint refused our client."""
    if ex.outcome == "unavailable":
        raise unavailable(ex, settings)
    if ex.outcome == "token_refused":
        raise FranceTravailAnswerError(f"{ex.message}", {"resultat": ex.outcome})


class FranceTravailNotRecordedError(Conflict):
    code = "france_travail_not_recorded"


# France Travail answered, and its answer is about the person: not known there (S002), several (S003), not
# certified (policy `refuse`), refused (R001, R002), or nothing to search with. Not a failure of France
# Travail's (a 5xx would tell the caller to retry what cannot succeed): 409, with the outcome and code.
DEFINITE = frozenset({"unknown", "ambiguous", "not_certified", "refused", "no_nir"})


def raise_unless_recorded(ex: Exchange) -> None:
    """A diagnostic France Travail did not record: 409 when its answer is about the person (`DEFINITE`), 502
    when France Travail failed (rejected, an error, a malformed answer), each with its return code."""
    if ex.outcome in DEFINITE:
        said = f": {ex.message}" if ex.message else ""
        raise FranceTravailNotRecordedError(
            f"France Travail did not record the diagnostic: {ex.outcome} ({ex.code}){said}",
            {"resultat": ex.outcome, "codeRetour": ex.code},
        )
    if ex.outcome != "found":
        raise FranceTravailAnswerError(
            f"France Travail did not record the diagnostic: {ex.outcome} ({ex.code}): {ex.message}",
            {"resultat": ex.outcome, "codeRetour": ex.code},
        )
