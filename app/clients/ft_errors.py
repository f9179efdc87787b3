"""The France Travail client's errors (app.clients.france_travail, which callers import them from)."""

from __future__ import annotations


class FranceTravailError(Exception):
    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class TokenRefused(FranceTravailError):
    """The token endpoint refused our client (a configuration matter, not a person's); `error` is the OAuth2
    error it gave (`invalid_client`, `invalid_scope`...) and `api` the API whose token was asked."""

    def __init__(self, message: str, *, code: str | None = None, error: str | None = None, api: str = "") -> None:
        super().__init__(message, code=code)
        self.error, self.api = error, api


class MalformedAnswer(FranceTravailError):
    """France Travail answered something that is not the JSON object its contract says."""


class FranceTravailNotConfigured(FranceTravailError):
    """The settings do not name a France Travail (PASSERELLE_FT_*)."""


class FranceTravailUnavailable(FranceTravailError):
    """France Travail does not answer (circuit open, or retries exhausted): try again after `retry_after`."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, status=503, code="france_travail_unavailable")
        self.retry_after = retry_after
