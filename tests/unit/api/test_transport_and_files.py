"""Transport and files without a server: where secrets may travel, signed bodies, sign-in backoff, file modes."""

from __future__ import annotations

import os
import stat

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from outcrop.api.asgi import HTTPS, LOOPBACK, PLAIN, transport
from outcrop.api.auth import authenticate
from outcrop.api.rating import RatingApp
from outcrop.api.sessions import SignInThrottle
from outcrop.errors import InvalidSignatureException, UnrecognizedClientException
from outcrop.evaluation.human.service import HumanReview
from outcrop.iam import sigv4
from outcrop.iam.audit import query_events
from outcrop.iam.service import BEARER
from outcrop.platform.objectstore import LocalObjectStore
from outcrop.platform.private import private_dir, private_files
from tests.helpers import call_rating_pages

# -- one rule for secrets in requests ---------------------------------------------------------------


def test_transport_is_https_or_a_loopback_client_or_plain():
    assert transport(True, "192.0.2.7") == HTTPS
    for host in ("127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"):
        assert transport(False, host) == LOOPBACK, host
    for host in ("192.0.2.7", "::ffff:192.0.2.7", "10.0.0.1", "", None, "not-an-address"):
        assert transport(False, host) == PLAIN, host


@pytest.fixture
def bearer(iam):
    root = iam.bootstrap()
    return iam.create_access_key(root.principal_arn, kind=BEARER).secret


def _bearer_call(iam, token, **where):
    return authenticate(iam, auth_enabled=True, service="bedrock", method="GET", raw_path="/foundation-models",
                        query="", headers={"authorization": f"Bearer {token}"}, body=b"", **where)


def test_a_bearer_key_over_plain_http_from_elsewhere_is_refused_unread(iam, bearer, monkeypatch):
    looked_up = []
    real = iam.authenticate_bearer
    monkeypatch.setattr(iam, "authenticate_bearer", lambda token: looked_up.append(token) or real(token))
    for address in ("192.0.2.7", "::ffff:10.1.2.3", ""):
        with pytest.raises(UnrecognizedClientException, match="only over HTTPS .* not checked") as refused:
            _bearer_call(iam, bearer, tls=False, client_ip=address)
        assert refused.value.status == 403
    assert looked_up == []
    assert _bearer_call(iam, bearer, tls=True, client_ip="192.0.2.7").is_root
    assert _bearer_call(iam, bearer, tls=False, client_ip="127.0.0.1").is_root
    assert _bearer_call(iam, bearer, tls=False, client_ip="::1").is_root
    assert len(looked_up) == 3


# -- a signature covers the body --------------------------------------------------------------------


def _signed_without_body(body: bytes) -> tuple[dict[str, str], sigv4.Authorization]:
    """Signed by botocore as S3 does over HTTPS when payload signing is off: X-Amz-Content-SHA256: UNSIGNED-PAYLOAD."""
    request = AWSRequest(method="POST", url="https://127.0.0.1:8600/model/a.b%3A0/converse", data=body)
    request.context["payload_signing_enabled"] = False
    SigV4Auth(Credentials("AKIAEXAMPLE", "s3cr3t"), "bedrock", "us-east-1").add_auth(request)
    headers = {k.lower(): v for k, v in request.headers.items()}
    headers["host"] = "127.0.0.1:8600"
    return headers, sigv4.parse_authorization(headers["authorization"])


def test_unsigned_payload_is_refused_whatever_the_body():
    headers, auth = _signed_without_body(b'{"messages": []}')
    assert headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD" and "x-amz-content-sha256" in auth.signed_headers
    for body in (b'{"messages": []}', b'{"messages": ["changed on the way"]}'):
        with pytest.raises(InvalidSignatureException, match="must cover its body"):
            sigv4.verify(auth, "s3cr3t", method="POST", raw_path="/model/a.b%3A0/converse", query="",
                         headers=headers, body=body)


def test_botocore_signs_every_bedrock_payload_over_https():
    """No bedrock* operation asks botocore for an unsigned body, so refusing UNSIGNED-PAYLOAD breaks no client."""
    import boto3

    for service in ("bedrock", "bedrock-runtime", "bedrock-agent", "bedrock-agent-runtime"):
        model = boto3.session.Session().client(service, region_name="us-east-1").meta.service_model
        for name in model.operation_names:
            operation = model.operation_model(name)
            assert operation.auth_type != "v4-unsigned-body" and not operation.unsigned_payload, (service, name)


class _SignsAuthority(SigV4Auth):
    """Signs as the AWS SDK for JavaScript v3 does over HTTP/2: `:authority` and no `host`."""

    def headers_to_sign(self, request):
        from botocore.awsrequest import HTTPHeaders

        signed = HTTPHeaders()
        for name, value in request.headers.items():
            signed[name.lower()] = value
        return signed


def test_an_http2_request_signed_with_authority_verifies_and_a_changed_authority_does_not():
    body = b'{"messages": []}'
    request = AWSRequest(method="POST", url="http://127.0.0.1:8600/model/a.b%3A0/converse", data=body,
                         headers={":authority": "127.0.0.1:8600", "content-type": "application/json"})
    _SignsAuthority(Credentials("AKIAEXAMPLE", "s3cr3t"), "bedrock", "us-east-1").add_auth(request)
    # The HTTP server gives the app the pseudo-header as Host; it never reaches the app by its own name.
    headers = {k.lower(): v for k, v in request.headers.items() if k != ":authority"}
    auth = sigv4.parse_authorization(headers["authorization"])
    assert ":authority" in auth.signed_headers and "host" not in auth.signed_headers
    check = dict(method="POST", raw_path="/model/a.b%3A0/converse", query="", body=body)
    sigv4.verify(auth, "s3cr3t", headers={**headers, "host": "127.0.0.1:8600"}, **check)
    with pytest.raises(InvalidSignatureException, match="does not match"):
        sigv4.verify(auth, "s3cr3t", headers={**headers, "host": "evil.example:8600"}, **check)


def test_a_signature_covering_neither_host_nor_authority_is_refused():
    request = AWSRequest(method="GET", url="http://127.0.0.1:8600/foundation-models")
    _SignsAuthority(Credentials("AKIAEXAMPLE", "s3cr3t"), "bedrock", "us-east-1").add_auth(request)
    headers = {k.lower(): v for k, v in request.headers.items()}
    with pytest.raises(InvalidSignatureException, match="'Host' must be a signed header"):
        sigv4.verify(sigv4.parse_authorization(headers["authorization"]), "s3cr3t", method="GET",
                     raw_path="/foundation-models", query="", headers={**headers, "host": "127.0.0.1:8600"}, body=b"")


# -- rater sign-in: backoff and the audit trail -----------------------------------------------------


def test_the_throttle_locks_a_key_after_five_failures_for_a_growing_while():
    now = [1000.0]
    throttle = SignInThrottle(clock=lambda: now[0])
    for _ in range(4):
        throttle.failed("AKIAKEY", "192.0.2.1")
        assert throttle.locked("AKIAKEY", "192.0.2.2") == 0
    throttle.failed("AKIAKEY", "192.0.2.1")
    assert throttle.locked("AKIAKEY", "192.0.2.2") == 60 and throttle.locked("AKIAOTHER", "192.0.2.2") == 0
    now[0] += 61
    assert throttle.locked("AKIAKEY", "192.0.2.2") == 0
    for _ in range(5):
        throttle.failed("AKIAKEY", "192.0.2.3")
    assert throttle.locked("AKIAKEY", "") == 120  # twice as long the second time
    now[0] += 121
    throttle.failed("AKIAKEY", "192.0.2.3")
    throttle.succeeded("AKIAKEY")  # the owner got it right: their key's count starts again
    for _ in range(4):
        throttle.failed("AKIAKEY", "192.0.2.4")
    assert throttle.locked("AKIAKEY", "") == 0


def test_the_throttle_locks_an_address_that_sprays_many_keys():
    now = [0.0]
    throttle = SignInThrottle(clock=lambda: now[0])
    for i in range(20):
        throttle.failed(f"AKIA{i:04d}", "192.0.2.9")
    assert throttle.locked("AKIAFRESH", "192.0.2.9") == 60
    assert throttle.locked("AKIAFRESH", "192.0.2.10") == 0
    now[0] += 1000  # failures older than the window no longer count
    throttle.failed("AKIA9999", "192.0.2.10")
    assert throttle.locked("", "192.0.2.10") == 0


@pytest.fixture
def pages(db, iam, tmp_path, monkeypatch):
    """(call, key, app): call(form, client) posts the sign-in form through RatingApp's ASGI entry point."""
    account = iam.create_account("raters").principal_arn.split(":")[4]
    user = iam.create_user(account, "rita")
    key = iam.create_access_key(user.arn)
    app = RatingApp(HumanReview(db, iam, "us-east-1"), iam, tmp_path)

    async def no_wait(seconds):
        return None

    monkeypatch.setattr("anyio.sleep", no_wait)  # a failed sign-in's 0.3 s

    def call(form, client=("127.0.0.1", 50000)):
        return call_rating_pages(app, "POST", "/sign-in", form=form, client=client,
                                 headers=[(b"user-agent", b"unit-test")])

    return call, key, app


def test_sign_in_backs_off_without_checking_the_secret_and_audits_every_try(pages, iam, db, monkeypatch):
    call, key, app = pages
    wrong = {"access_key_id": key.access_key_id, "secret_access_key": "not-the-secret"}
    for _ in range(5):
        assert call(wrong)[0] == 401
    looked_up = []
    real = iam.authenticate_key
    monkeypatch.setattr(iam, "authenticate_key", lambda key_id: looked_up.append(key_id) or real(key_id))
    status, head, page = call({"access_key_id": key.access_key_id, "secret_access_key": key.secret})
    assert status == 429 and 55 <= int(head["retry-after"]) <= 60 and "Too many failed sign-ins" in page
    assert "set-cookie" not in head and looked_up == []

    events = query_events(db, service="outcrop-rating", limit=None)
    assert [e.result for e in events] == ["ThrottlingException"] + ["UnrecognizedClientException"] * 5
    assert all(e.operation == "SignIn" and e.source_ip == "127.0.0.1" and e.user_agent == "unit-test"
               and e.access_key_id == key.access_key_id for e in events)
    assert events[-1].principal_arn.endswith(":user/rita") and events[-1].status == 401
    assert not any(key.secret in str(e.as_dict()) or "not-the-secret" in str(e.as_dict()) for e in events)

    # An unknown key is recorded by the ID tried; a refused plain-HTTP sign-in too, and a success.
    assert call({"access_key_id": "AKIANOSUCHKEY", "secret_access_key": "x"}, client=("::1", 1))[0] == 401
    assert call({"access_key_id": "AKIAPLAIN", "secret_access_key": "x"}, client=("192.0.2.7", 1))[0] == 403
    app.throttle = SignInThrottle()
    assert call({"access_key_id": key.access_key_id, "secret_access_key": key.secret})[0] == 303
    newest = query_events(db, service="outcrop-rating", limit=3)
    assert [(e.result, e.access_key_id, e.source_ip) for e in newest] == [
        ("Success", key.access_key_id, "127.0.0.1"), ("AccessDeniedException", "AKIAPLAIN", "192.0.2.7"),
        ("UnrecognizedClientException", "AKIANOSUCHKEY", "::1")]
    assert newest[2].account_id == "" and newest[0].principal_arn.endswith(":user/rita")


def test_an_address_that_fails_too_often_is_locked_for_every_key(pages):
    call, key, app = pages
    for i in range(20):
        assert call({"access_key_id": f"AKIAGUESS{i:03d}", "secret_access_key": "x"}, client=("127.0.0.2", 1))[0] == 401
    good = {"access_key_id": key.access_key_id, "secret_access_key": key.secret}
    assert call(good, client=("127.0.0.2", 1))[0] == 429
    assert call(good, client=("127.0.0.3", 1))[0] == 303


# -- files ------------------------------------------------------------------------------------------


@pytest.fixture
def umask():
    """Restores the test process's umask after a test that changes it."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_private_dir_creates_0700_and_tightens_an_earlier_0755(tmp_path, umask):
    fresh = tmp_path / "a" / "data"
    private_dir(fresh)
    assert _mode(fresh) == 0o700
    old = tmp_path / "old"
    old.mkdir(mode=0o755)
    os.chmod(old, 0o755)
    (old / "outcrop.db").write_bytes(b"")
    private_dir(old)
    assert _mode(old) == 0o700


def test_under_outcrop_umask_objects_and_their_folders_are_private(tmp_path, umask):
    private_files()
    store = LocalObjectStore(tmp_path / "objects")
    store.create_bucket("bkt")
    store.put_bytes("s3://bkt/deep/key.txt", b"secret data")
    path = tmp_path / "objects" / "bkt" / "deep" / "key.txt"
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700 and _mode(tmp_path / "objects" / "bkt") == 0o700
    assert os.umask(0o077) == 0o077

