"""Behind a load balancer: X-Forwarded-For and X-Forwarded-Proto are believed from trusted_proxies only.

A server that trusts loopback as its proxy, and the suite's server that trusts no one, get the same raw
requests from loopback with the same forwarded headers; what aws:SourceIp, aws:SecureTransport and the
bearer-key rule make of them differs exactly as trusted_proxies says.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import start_server, stop_server

SMOLLM2 = "huggingface.smollm2-135m-instruct-v1:0"
#: Listing needs TLS, reading one model needs nothing, and nothing is allowed from 203.0.113.0/24.
POLICY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "bedrock:ListFoundationModels", "Resource": "*",
     "Condition": {"Bool": {"aws:SecureTransport": "true"}}},
    {"Effect": "Allow", "Action": "bedrock:GetFoundationModel", "Resource": "*"},
    {"Effect": "Deny", "Action": "bedrock:*", "Resource": "*",
     "Condition": {"IpAddress": {"aws:SourceIp": "203.0.113.0/24"}}}]}


def _iam(server, action: str, **body) -> dict:
    status, _, answer = server.raw("POST", f"/_outcrop/iam/{action}", json.dumps(body).encode())
    assert status == 200, answer
    return answer


def _proxied_user(server) -> tuple[tuple[str, str], str]:
    """A user under POLICY: its SigV4 key and its bearer API key."""
    _iam(server, "CreateUser", UserName="proxied")
    _iam(server, "PutUserPolicy", UserName="proxied", PolicyName="p", PolicyDocument=json.dumps(POLICY))
    key = _iam(server, "CreateAccessKey", UserName="proxied")
    bearer = _iam(server, "CreateAccessKey", UserName="proxied", Bearer=True)
    return (key["AccessKeyId"], key["SecretAccessKey"]), bearer["ApiKey"]


@pytest.fixture(scope="module")
def behind_loopback(tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("proxied"), {"OUTCROP_TRUSTED_PROXIES": "127.0.0.1, ::1"})
    yield running
    stop_server(running)


def _call(server, operation: str, key=None, bearer: str | None = None, forwarded_for: str | None = None,
          proto: str | None = None) -> str:
    """'ok', or the error code of a raw request carrying these forwarded headers."""
    headers = {}
    if forwarded_for:
        headers["X-Forwarded-For"] = forwarded_for
    if proto:
        headers["X-Forwarded-Proto"] = proto
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    path = "/foundation-models" if operation == "list" else f"/foundation-models/{SMOLLM2}"
    status, _, body = server.raw("GET", path, key=key, sign=bearer is None, headers=headers)
    return "ok" if status == 200 else body["__type"]


def test_forwarded_headers_count_from_a_trusted_proxy_only(behind_loopback, server):
    assert "X-Forwarded-For/-Proto believed from 127.0.0.1, ::1" in behind_loopback.banner
    key, bearer = _proxied_user(behind_loopback)
    # From the trusted proxy: the client's scheme and address are the forwarded ones.
    assert _call(behind_loopback, "list", key, forwarded_for="198.51.100.9", proto="https") == "ok"
    assert _call(behind_loopback, "list", key, forwarded_for="198.51.100.9") == "AccessDeniedException"
    assert _call(behind_loopback, "get", key, forwarded_for="198.51.100.9") == "ok"
    assert _call(behind_loopback, "get", key, forwarded_for="203.0.113.7") == "AccessDeniedException"
    # Through a chain: the right-most hop not trusted is the client (trusted hops are skipped) ...
    assert _call(behind_loopback, "get", key, forwarded_for="203.0.113.7, 127.0.0.1") == "AccessDeniedException"
    # ... and what a client wrote to the left of it is not believed.
    assert _call(behind_loopback, "get", key, forwarded_for="203.0.113.7, 198.51.100.9") == "ok"
    # A bearer key from a client beyond the proxy: only if the proxy took it over HTTPS.
    assert _call(behind_loopback, "list", bearer=bearer, forwarded_for="198.51.100.9") \
        == "UnrecognizedClientException"
    assert _call(behind_loopback, "list", bearer=bearer, forwarded_for="198.51.100.9", proto="https") == "ok"

    # The suite's server trusts no proxy: the same headers from the same peer change nothing.
    key, bearer = _proxied_user(server)
    assert _call(server, "list", key, forwarded_for="198.51.100.9", proto="https") == "AccessDeniedException"
    assert _call(server, "get", key, forwarded_for="203.0.113.7") == "ok"
    # A loopback client's bearer key is taken (then refused by the policy, not as a key sent in clear).
    assert _call(server, "list", bearer=bearer, forwarded_for="198.51.100.9") == "AccessDeniedException"
