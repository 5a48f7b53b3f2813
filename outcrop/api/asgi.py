"""Small ASGI helpers shared by the API and the rating pages."""

from __future__ import annotations

import ipaddress
from typing import Any


async def read_body(receive, limit: int) -> bytes | None:
    """An ASGI request's whole body, or None as soon as it grows past `limit` bytes, or when the client leaves
    (or the server cuts it off: a body that stalled) before its body is complete: a truncated body is never
    acted on, and what is answered to it goes nowhere."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


#: How a request reached the server, for the one rule on secrets in requests (a bearer API key, a rater's
#: secret access key at sign-in): they are taken over HTTPS or from this machine, never over plain HTTP
#: from elsewhere, where anyone on the path has read them.
HTTPS, LOOPBACK, PLAIN = "https", "loopback", "plain"


def is_tls(scope: dict[str, Any]) -> bool:
    """Whether the ASGI request came over TLS: the server's own, or, for a connection from one of the
    trusted_proxies, what its X-Forwarded-Proto says (`behind_proxies` has rewritten the scope's scheme)."""
    return scope.get("scheme") == "https"


def client_host(scope: dict[str, Any]) -> str:
    """The client's address from an ASGI scope; empty when there is none (a Unix socket)."""
    client = scope.get("client")
    return str(client[0]) if client else ""


def ip_address(host: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """`host` as an address (an IPv4-mapped IPv6 one as IPv4); None when it is none (a Unix socket, a name)."""
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address


def is_loopback(host: str | None) -> bool:
    """Whether `host` is this machine: 127.0.0.0/8 or ::1 (or ::ffff:127.x)."""
    address = ip_address(host)
    return address is not None and address.is_loopback


Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def in_networks(host: str | None, networks: Networks) -> bool:
    address = ip_address(host)
    return address is not None and any(address in network for network in networks)


def behind_proxies(app, trusted: Networks):
    """`app`, seeing the client and scheme that the trusted proxies forward (trusted_proxies).

    Only a connection whose peer is one of `trusted` is believed, and then only as far as its chain of
    proxies is trusted: the client is the right-most X-Forwarded-For hop that is not a trusted proxy (a
    client can write any X-Forwarded-For it likes, but each proxy appends the address it was reached from),
    and the scheme is the right-most X-Forwarded-Proto (https or http, as the proxy that set it saw it).
    The ASGI scope's `client` and `scheme` are rewritten once, here, so aws:SourceIp, aws:SecureTransport,
    the bearer-key rule (`transport`), the audit trail and the sign-in throttle all see the same client.
    From any other peer the headers are ignored. No `trusted`: `app` itself."""
    if not trusted:
        return app

    async def forwarded(scope: dict[str, Any], receive, send) -> None:
        if scope["type"] == "http" and in_networks(client_host(scope), trusted):
            scope = forwarded_scope(scope, trusted)
        await app(scope, receive, send)

    return forwarded


def forwarded_scope(scope: dict[str, Any], trusted: Networks) -> dict[str, Any]:
    """The scope as the client beyond the trusted proxies sent it (its peer is a trusted proxy)."""
    hops: list[str] = []
    protos: list[str] = []
    for name, value in scope.get("headers") or ():
        name = name.lower()
        if name == b"x-forwarded-for":
            hops += [hop.strip() for hop in value.decode("latin-1").split(",")]
        elif name == b"x-forwarded-proto":
            protos += [proto.strip().lower() for proto in value.decode("latin-1").split(",")]
    # No address beyond the trusted proxies (no header, "unknown", a unix socket): the client is unknown, never the
    # proxy's own address, which on a proxy beside the server would pass for loopback.
    client = ""
    for hop in reversed(hops):
        address = ip_address(_strip_port(hop))
        if address is None:  # not an address: nothing to its left can be believed either, the client is unknown
            client = ""
            break
        client = str(address)  # every hop trusted: the left-most, a machine of the trusted networks itself
        if not any(address in network for network in trusted):
            break
    scope = {**scope, "client": (client, 0)}
    # One value only, as a proxy that sets the header writes it (nginx's proxy_set_header, HAProxy's http-request
    # set-header): several mean it appended to the client's own, which anyone can write.
    if len(protos) == 1 and protos[0] in ("http", "https"):
        scope["scheme"] = protos[0]
    return scope


def _strip_port(hop: str) -> str:
    """An X-Forwarded-For hop's address: `[::1]:443` -> `::1`, `10.0.0.1:80` -> `10.0.0.1`."""
    if hop.startswith("["):
        return hop[1:].split("]", 1)[0]
    return hop.split(":", 1)[0] if hop.count(":") == 1 else hop


def transport(tls: bool, host: str | None) -> str:
    """HTTPS, LOOPBACK (plain HTTP from this machine) or PLAIN (plain HTTP from elsewhere)."""
    return HTTPS if tls else LOOPBACK if is_loopback(host) else PLAIN
