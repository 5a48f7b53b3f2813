"""Small ASGI helpers shared by the API and the rating pages."""

from __future__ import annotations

import ipaddress
from typing import Any


async def read_body(receive, limit: int) -> bytes | None:
    """An ASGI request's whole body, or None as soon as it grows past `limit` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
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
    """Whether the ASGI request came over TLS (the server's own, or a trusted proxy's X-Forwarded-Proto)."""
    return scope.get("scheme") == "https"


def client_host(scope: dict[str, Any]) -> str:
    """The client's address from an ASGI scope; empty when there is none (a Unix socket)."""
    client = scope.get("client")
    return str(client[0]) if client else ""


def is_loopback(host: str | None) -> bool:
    """Whether `host` is this machine: 127.0.0.0/8 or ::1 (or ::ffff:127.x)."""
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:  # no client (a Unix socket), or not an IP address
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def transport(tls: bool, host: str | None) -> str:
    """HTTPS, LOOPBACK (plain HTTP from this machine) or PLAIN (plain HTTP from elsewhere)."""
    return HTTPS if tls else LOOPBACK if is_loopback(host) else PLAIN
