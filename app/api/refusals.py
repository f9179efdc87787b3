"""The HTTP side of refused and missing accesses (issue #23): each 401, 403, 429 and each 404 answered to an
authenticated caller is counted for the audit (`app.audit.refusals.RefusalLog`: one event per caller or
source address, endpoint, outcome and minute), and each refusal without a valid credential counts against
its source address's limit (`app.security.ratelimit.RefusalLimiter`): past it, 429 instead of 401."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.types import Scope

from app.audit.chain import ALL_DEPARTEMENTS
from app.audit.refusals import ANONYMOUS
from app.errors import PasserelleError, TooManyRequests
from app.kit.shared import off_loop
from app.security.auth import Principal

ACTIONS = {401: "access.unauthenticated", 403: "access.forbidden", 404: "access.not_found", 429: "access.rate_limited"}
RECORDED = "refusal_recorded"  # request.state: the route recorded its refusal itself


def endpoint_of(scope: Scope) -> str:
    """The route's template (`GET /api/v1/persons/{person_id}`): never the path itself, which may hold a
    download link's token; `GET *` before a route is known."""
    path = getattr(scope.get("route"), "path", None)
    return f"{scope.get('method')} {path or '*'}"


def caller_departements(principal: Principal | None) -> list[str]:
    """The départements a caller's refusal is recorded in: each of its own (its auditors read it there, and
    only there), none (`*`) for an anonymous caller."""
    if principal is not None and principal.departements:
        return sorted(principal.departements)
    return [ALL_DEPARTEMENTS]


def record(
    scope: Scope,
    status: int,
    code: str,
    *,
    principal_id: str | None = None,
    action: str | None = None,
    departement: str | None = None,
    outcome: str | None = None,
    reason: str | None = None,
) -> None:
    """Count one refused (or missing) access of this request for the audit (written within the minute)."""
    app = scope.get("app")
    log = getattr(getattr(app, "state", None), "refusals", None)
    if log is None:
        return
    state: dict[str, Any] = scope.setdefault("state", {})
    principal: Principal | None = state.get("principal")
    for dep in [departement] if departement else caller_departements(principal):
        log.add(
            principal_id or (principal.id if principal is not None else ANONYMOUS),
            action or ACTIONS.get(status, "access.refused"),
            dep,
            outcome or ("not_found" if status == 404 else "refused"),
            endpoint=endpoint_of(scope),
            source_address=state.get("source_address"),
            status=status,
            reason=reason or code,
            agent=principal.agent.identifiant if principal is not None and principal.agent else None,
            request_id=state.get("request_id"),
        )
    state[RECORDED] = True


def count_against_source(request: Request) -> int:
    """One refusal without a valid credential from the request's source address: 0, or the seconds it
    must wait (over its limit: answer 429)."""
    limiter = getattr(request.app.state, "refusal_limiter", None)
    return limiter.refuse(request.scope.get("state", {}).get("source_address")) if limiter is not None else 0


def refusals_remote(request: Request) -> bool:
    """Whether counting a refusal is a network round trip (a shared limiter): coroutines then count it in a
    thread (`app.kit.shared.off_loop`), never on the event loop."""
    return bool(getattr(getattr(request.app.state, "refusal_limiter", None), "remote", False))


async def count_against_source_off_loop(request: Request) -> int:
    """`count_against_source` for a coroutine."""
    return await off_loop(refusals_remote(request), count_against_source, request)


def too_many(wait: int) -> TooManyRequests:
    return TooManyRequests(f"Too many refused attempts from this address; retry in {wait} s.", wait)


def refused(request: Request, exc: PasserelleError) -> PasserelleError:
    """The error handler's part: record the refusal (unless its route did), and answer a source address
    over its limit 429 instead of 401. A 404 is recorded for an authenticated caller only (a resource it
    may not read, or none): an anonymous one never gets that far."""
    state = request.scope.get("state", {})
    status = exc.status_code
    if state.get(RECORDED) or status not in ACTIONS or (status == 404 and state.get("principal") is None):
        return exc
    if status == 401 and (wait := count_against_source(request)):
        exc = too_many(wait)
    record(request.scope, exc.status_code, exc.code)
    return exc
