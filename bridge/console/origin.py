"""Who is asking the console, and by which name: the client's address and scheme (believing
``X-Forwarded-For`` / ``X-Forwarded-Proto`` only from ``BRIDGE_CONSOLE_TRUSTED_PROXIES``),
and the ``Host`` allow-list.

The allow-list stops DNS rebinding (a page on ``evil.example`` whose name is made to point
at 127.0.0.1 reaching the console from an operator's browser): a request is served only
when its ``Host`` (port aside, any case) is a loopback name or address, the configured
``BRIDGE_CONSOLE_HOST`` (unless a wildcard), or one of ``BRIDGE_CONSOLE_ALLOWED_HOSTS``.
Anything else is a 400 naming the setting. ``/healthz`` answers any ``Host`` (probes use
the pod's address; it says nothing).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from aiohttp.typedefs import Middleware

LOOPBACK_NAMES = frozenset({"localhost"})
WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]", "*"})
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """``BRIDGE_CONSOLE_TRUSTED_PROXIES`` entries (addresses or CIDR networks), parsed;
    ValueError names a bad one."""
    found = []
    for entry in entries:
        try:
            found.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(entry) from None
    return tuple(found)


def _address(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address((text or "").strip().strip("[]"))
    except ValueError:
        return None


def _trusted(text: str | None, trusted: tuple[Network, ...]) -> bool:
    address = _address(text)
    return address is not None and any(address in network for network in trusted)


def client_address(request: web.BaseRequest, trusted: tuple[Network, ...]) -> str:
    """The client's address: the connection's peer, or, when that peer is a trusted proxy,
    the nearest untrusted address of ``X-Forwarded-For``."""
    peer = request.remote or "?"
    if not _trusted(peer, trusted):
        return peer
    hops = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",")]
    for hop in reversed([h for h in hops if h]):
        if not _trusted(hop, trusted):
            return hop if _address(hop) is not None else peer
    return peer


def over_https(request: web.BaseRequest, trusted: tuple[Network, ...]) -> bool:
    """Whether the browser reached the console over https: directly, or as a trusted proxy
    says in ``X-Forwarded-Proto`` (its last value: the one the nearest proxy set)."""
    if request.secure:
        return True
    if not _trusted(request.remote, trusted):
        return False
    said = request.headers.get("X-Forwarded-Proto", "").split(",")[-1].strip().lower()
    return said == "https"


def host_name(header: str) -> str:
    """``Host`` without its port, lower case, without a trailing dot."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    if header.count(":") == 1:
        header = header.split(":", 1)[0]
    return header.rstrip(".")


def allowed_hosts(listen_host: str, extra: Iterable[str]) -> frozenset[str]:
    """The names the console answers to, besides loopback addresses."""
    names = set(LOOPBACK_NAMES) | {host_name(h) for h in extra if h.strip()}
    if listen_host.strip().lower() not in WILDCARDS:
        names.add(host_name(listen_host))
    return frozenset(names)


def host_allowed(header: str | None, allowed: frozenset[str]) -> bool:
    name = host_name(header or "")
    if name in allowed:
        return True
    address = _address(name)
    return address is not None and address.is_loopback


def host_guard(allowed: frozenset[str]) -> Middleware:
    """Refuses a request whose ``Host`` is not allowed (``/healthz`` excepted)."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != "/healthz" and not host_allowed(request.host, allowed):
            raise web.HTTPBadRequest(
                text="This console does not answer to that host name: open it by the name "
                "it is configured with, or add the name to BRIDGE_CONSOLE_ALLOWED_HOSTS."
            )
        return await handler(request)

    return guard
