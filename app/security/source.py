"""Where a request comes from (issue #23): the address the audit records and the refusal limit counts.

The peer's address, unless the peer is one of the reverse proxies the operator trusts
(`PASSERELLE_TRUSTED_PROXIES`): then the right-most address of `X-Forwarded-For` that is not a trusted proxy
(each proxy appends the address it received the request from; what is left of the last trusted one may be
written by anyone). Without trusted proxies `X-Forwarded-For` is never read: a caller cannot choose the
address it is recorded under."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_LENGTH = 64  # access_records.source_address


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _trusted(ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None, trusted: tuple[Network, ...]) -> bool:
    return ip is not None and any(ip.version == net.version and ip in net for net in trusted)


def source_address(peer: str | None, forwarded_for: Iterable[str], trusted: tuple[Network, ...]) -> str | None:
    """The request's source: `peer` (the connection's address), or behind trusted proxies the right-most
    untrusted address of the `X-Forwarded-For` headers (in their order). A hop that is not an address stops
    the walk: the last trusted one is the source then."""
    if peer is None:
        return None
    address = peer
    if trusted and _trusted(_ip(peer), trusted):
        hops = [h for value in forwarded_for for h in value.split(",") if h.strip()]
        for hop in reversed(hops):
            ip = _ip(hop)
            if ip is None:
                break
            address = str(ip)
            if not _trusted(ip, trusted):
                break
    return address[:MAX_LENGTH]


def scope_source(scope: Any, trusted: tuple[Network, ...]) -> str | None:
    """`source_address` of an ASGI scope."""
    client = scope.get("client")
    forwarded = [v.decode("latin-1") for n, v in scope.get("headers") or [] if n == b"x-forwarded-for"]
    return source_address(client[0] if client else None, forwarded, trusted)


def source_of(request: Any) -> str | None:
    """The source address `app.api.middleware.RequestContextMiddleware` found for a request (the peer's
    when the request did not go through it)."""
    state = getattr(request, "state", None)
    found = getattr(state, "source_address", None) if state is not None else None
    if found:
        return str(found)
    client = getattr(request, "client", None)
    return client.host[:MAX_LENGTH] if client else None
