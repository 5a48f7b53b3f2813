"""trusted_proxies: which forwarded client and scheme the server believes, and from whom."""

from __future__ import annotations

import asyncio

import pytest

from outcrop.api.asgi import behind_proxies, forwarded_scope
from outcrop.platform.config import Settings, load_settings

TRUSTED = Settings(trusted_proxies="10.0.0.0/8, 2001:db8::1").trusted_proxy_networks


def _scope(peer: str, *headers: tuple[bytes, bytes], scheme: str = "http") -> dict:
    return {"type": "http", "client": (peer, 5000), "scheme": scheme, "headers": list(headers)}


def _seen(scope: dict, trusted=TRUSTED) -> tuple[str, str]:
    seen = {}

    async def app(scope, receive, send):
        seen.update(scope)
    asyncio.run(behind_proxies(app, trusted)(scope, None, None))
    return seen["client"][0], seen["scheme"]


@pytest.mark.parametrize(("forwarded_for", "client"), [
    (b"203.0.113.7", "203.0.113.7"),
    (b"203.0.113.7, 10.1.1.1", "203.0.113.7"),  # trusted hops are skipped
    (b"198.51.100.1, 203.0.113.7", "203.0.113.7"),  # what the client wrote left of its own hop is not believed
    (b"[2001:db8::9]:443", "2001:db8::9"),
    (b"203.0.113.7:8080", "203.0.113.7"),
    (b"unknown, 10.1.1.1", ""),  # not an address: the client is unknown (never the proxy, maybe loopback)
    (b"10.2.2.2", "10.2.2.2"),  # every hop trusted: the left-most
])
def test_the_client_is_the_right_most_hop_that_is_not_a_trusted_proxy(forwarded_for, client):
    assert forwarded_scope(_scope("10.0.0.1", (b"x-forwarded-for", forwarded_for)), TRUSTED)["client"][0] == client


def test_forwarded_headers_are_believed_from_a_trusted_peer_only():
    appended = ((b"x-forwarded-for", b"203.0.113.7"), (b"x-forwarded-proto", b"https, http"))
    assert _seen(_scope("10.0.0.1", *appended)) == ("203.0.113.7", "http")  # appended to the client's: not believed
    assert _seen(_scope("10.0.0.1", (b"x-forwarded-proto", b"https"))) == ("", "https")  # no address: unknown
    headers = ((b"x-forwarded-for", b"203.0.113.7"), (b"x-forwarded-proto", b"https"))
    assert _seen(_scope("10.0.0.1", *headers)) == ("203.0.113.7", "https")  # the proto the proxy set
    assert _seen(_scope("::ffff:10.0.0.1", *headers)) == ("203.0.113.7", "https")
    assert _seen(_scope("192.0.2.1", *headers)) == ("192.0.2.1", "http")  # not a proxy of ours: ignored
    assert _seen(_scope("192.0.2.1", *headers), trusted=()) == ("192.0.2.1", "http")
    # A trusted proxy that forwards no client leaves it unknown; one that took plain HTTP says so, even under TLS.
    assert _seen(_scope("10.0.0.1", (b"x-forwarded-proto", b"http"), scheme="https")) == ("", "http")


def test_a_malformed_trusted_proxy_is_an_error_at_start(monkeypatch):
    monkeypatch.setenv("OUTCROP_TRUSTED_PROXIES", "10.0.0.0/8, nginx.local")
    with pytest.raises(ValueError, match="nginx.local"):
        load_settings()
