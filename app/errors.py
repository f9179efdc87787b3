"""The one error type a caller can act on: `PasserelleError` carries its `code`, its HTTP status and its CLI
exit code, so the HTTP shell (app.api.errors) and the command line (app.cli.common) each answer every one of
them in one place. Their JSON form is `{"error", "message", "details"}`.

Pure: no FastAPI, no domain (tests/architecture/test_imports.py)."""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """The exit codes of every command (docs/operations.md, "Exit codes")."""

    DONE = 0  # done (files already known included)
    REJECTED = 1  # input rejected: a file, or rows of a CSV (nothing of what was rejected applied)
    USAGE = 2  # a wrong option, argument or path
    ENVIRONMENT = 3  # the environment: database unreachable or not migrated, a setting missing or wrong
    INTERNAL = 4  # a bug: the message says where the details are logged
    BUSY = 5  # another run of the same job holds its lock: nothing was done, try again later
    UNTRUSTED = 6  # a signed checkpoint that does not verify with the public key given (audit verify --checkpoint)


class PasserelleError(Exception):
    """An error the caller can act on: `code` (the JSON `error`), `status_code` (HTTP), `exit_code` (CLI)."""

    status_code = 400
    code = "bad_request"
    exit_code: int = ExitCode.REJECTED
    headers: dict[str, str] | None = None

    def __init__(self, message: str, details: Any = None, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code:
            self.code = code


class Unauthenticated(PasserelleError):
    status_code = 401
    code = "unauthenticated"


class Forbidden(PasserelleError):
    status_code = 403
    code = "forbidden"


class NotFound(PasserelleError):
    status_code = 404
    code = "not_found"
    exit_code = ExitCode.USAGE


class Conflict(PasserelleError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(PasserelleError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(PasserelleError):
    status_code = 415
    code = "unsupported_media_type"


class Unprocessable(PasserelleError):
    status_code = 422
    code = "invalid_input"


class Busy(PasserelleError):
    """Another run of the same job holds its lock: nothing was done, try again later."""

    status_code = 409
    code = "busy"
    exit_code = ExitCode.BUSY


class NotConfigured(PasserelleError):
    """A setting the operation needs is missing or wrong (the message names it)."""

    status_code = 503
    code = "not_configured"
    exit_code = ExitCode.ENVIRONMENT


class Unavailable(PasserelleError):
    """A partner (mail server, France Travail) failed or did not answer: nothing was half-done."""

    status_code = 502
    code = "unavailable"
    exit_code = ExitCode.ENVIRONMENT


class TooManyRequests(PasserelleError):
    status_code = 429
    code = "too_many_requests"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, {"retry_after_seconds": retry_after})
        self.headers = {"Retry-After": str(retry_after)}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": code, "message": message, "details": details}
