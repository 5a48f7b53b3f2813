"""Transport and files: bearer keys and rater secrets only over TLS or from loopback, signed bodies,
aws:SecureTransport, sign-in backoff with an audit trail, and a data dir no other user can read."""

from __future__ import annotations

import gzip
import json
import os
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from tests.backends import embedded_only
from tests.conftest import start_server, stop_server
from tests.integration.security.helpers import QUESTION, error_code, outcrop

RATE = "/_outcrop/evaluation/rate"
TLS_ONLY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "bedrock:*", "Resource": "*"},
    {"Sid": "TlsOnly", "Effect": "Deny", "Action": "*", "Resource": "*",
     "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """`outcrop serve --tls` on a data dir an earlier version made 0755, with a 0644 file in it."""
    data_dir = tmp_path_factory.mktemp("tls") / "data"
    data_dir.mkdir()
    os.chmod(data_dir, 0o755)
    (data_dir / "outcrop.db").touch(mode=0o600)  # an Outcrop data dir: someone else's folder is left as it is
    (data_dir / "old-notes.txt").write_text("made by an earlier version")
    os.chmod(data_dir / "old-notes.txt", 0o644)
    running = start_server(data_dir, {"OUTCROP_TLS": "on"})
    yield running
    stop_server(running)


def _user_with_key(server, name: str, policy: dict | None = None, tmp_path=None) -> tuple[str, str]:
    outcrop(server, "iam", "create-user", "--name", name)
    if policy is not None:
        (tmp_path / f"{name}.json").write_text(json.dumps(policy))
        outcrop(server, "iam", "put-user-policy", "--user-name", name, "--policy-name", "tls-only",
                "--policy-document", f"file://{tmp_path / f'{name}.json'}")
    key = json.loads(outcrop(server, "iam", "create-access-key", "--user-name", name).stdout)
    return key["AccessKeyId"], key["SecretAccessKey"]


def _tls_client(tls, service: str, key: tuple[str, str] | None = None):
    key_id, secret = key or tls.root_key()
    return boto3.client(service, endpoint_url=tls.endpoint, region_name="us-east-1", aws_access_key_id=key_id,
                        aws_secret_access_key=secret, verify=str(tls.data_dir / "tls" / "cert.pem"),
                        config=Config(retries={"max_attempts": 1}))


# -- bearer keys ------------------------------------------------------------------------------------

def test_a_bearer_key_from_this_machine_over_plain_http_is_accepted(server):
    """Plain HTTP from loopback passes (the refusal from elsewhere is in tests/unit/api/test_transport_and_files.py:
    every test client is on 127.0.0.1); over TLS, see test_bearer_api_key_over_https."""
    token = json.loads(outcrop(server, "iam", "create-access-key", "--bearer").stdout)["ApiKey"]
    status, _, body = server.raw("GET", "/foundation-models", sign=False, headers={"Authorization": f"Bearer {token}"})
    assert status == 200 and body["modelSummaries"]


# -- a signature covers the body --------------------------------------------------------------------

def test_unsigned_payload_is_refused(server, tiny_model):
    path = f"/model/{urllib.parse.quote(tiny_model, safe='')}/converse"
    body = json.dumps({"messages": QUESTION, "inferenceConfig": {"maxTokens": 2}}).encode()
    request = AWSRequest(method="POST", url=server.endpoint + path, data=body,
                         headers={"Content-Type": "application/json"})
    request.context["payload_signing_enabled"] = False  # what S3 clients may do; a valid signature otherwise
    SigV4Auth(Credentials(*server.root_key()), "bedrock", "us-east-1").add_auth(request)
    assert request.headers["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"
    prepared = urllib.request.Request(server.endpoint + path, data=body, method="POST",
                                      headers=dict(request.headers.items()))
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(prepared, timeout=60)
    answer = json.loads(refused.value.read())
    assert refused.value.code == 403 and answer["__type"] == "InvalidSignatureException"
    assert "must cover its body" in answer["message"]


def test_boto3_and_the_aws_cli_over_https_sign_their_bodies(tls):
    """Over HTTPS botocore could leave a body unsigned, if an operation's model asked; no bedrock one does."""
    runtime = _tls_client(tls, "bedrock-runtime")
    code, status, _ = error_code(lambda: runtime.converse(modelId="no-such-model", messages=QUESTION))
    assert code not in ("InvalidSignatureException", "UnrecognizedClientException") and status in (400, 404)
    env = {**tls.cli_env(), "AWS_CA_BUNDLE": str(tls.data_dir / "tls" / "cert.pem")}
    result = subprocess.run([sys.executable, "-m", "awscli", "bedrock-runtime", "converse", "--model-id",
                             "no-such-model", "--messages", json.dumps(QUESTION), "--endpoint-url", tls.endpoint],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0 and "Exception" in result.stderr and "Signature" not in result.stderr


# -- aws:SecureTransport ----------------------------------------------------------------------------

def test_secure_transport_is_true_over_tls_only(server, tls, tmp_path):
    plain_key = _user_with_key(server, "tls-only", TLS_ONLY, tmp_path)
    code, status, message = error_code(server.client("bedrock", key=plain_key).list_foundation_models)
    assert (code, status) == ("AccessDeniedException", 403) and "explicit deny" in message
    tls_key = _user_with_key(tls, "tls-only", TLS_ONLY, tmp_path)
    assert _tls_client(tls, "bedrock", tls_key).list_foundation_models()["modelSummaries"]


# -- rater sign-in ----------------------------------------------------------------------------------

def _sign_in(server, key_id: str, secret: str):
    """(status, headers with case-insensitive lookup) of a sign-in form posted from this machine."""
    form = urllib.parse.urlencode({"access_key_id": key_id, "secret_access_key": secret}).encode()
    request = urllib.request.Request(server.endpoint + RATE + "/sign-in", data=form, method="POST")
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.headers


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_rater_sign_in_backs_off_per_key_and_every_failure_is_audited(server):
    key_id, secret = _user_with_key(server, "lockout-rater")
    assert _sign_in(server, key_id, secret)[0] == 303
    for _ in range(5):
        assert _sign_in(server, key_id, "wrong-" + secret[6:])[0] == 401
    status, headers = _sign_in(server, key_id, secret)  # even the right secret now waits, unchecked
    assert status == 429 and 1 <= int(headers["Retry-After"]) <= 60

    trail = outcrop(server, "audit", "--operation", "outcrop-rating:SignIn", "--failed", "--json").stdout
    events = [e for e in map(json.loads, trail.splitlines()) if e["access_key_id"] == key_id]
    assert [e["result"] for e in events] == ["ThrottlingException"] + ["UnrecognizedClientException"] * 5
    assert all(e["source_ip"] == "127.0.0.1" for e in events)
    assert all(e["principal_arn"].endswith(":user/lockout-rater") for e in events[1:])  # a lock looks nothing up
    assert secret not in trail and secret[6:] not in trail


# -- files ------------------------------------------------------------------------------------------

@embedded_only
def test_the_tls_servers_data_dir_is_private_and_an_old_one_is_tightened(tls, tmp_path):
    (tmp_path / "object.txt").write_text("an object")
    outcrop(tls, "s3", "mb", "s3://private-bucket")
    outcrop(tls, "s3", "cp", str(tmp_path / "object.txt"), "s3://private-bucket/deep/object.txt")
    data = tls.data_dir
    assert _mode(data) == 0o700
    for name in ("outcrop.db", "outcrop.db-wal", "outcrop.db-shm", "secret.key", "credentials", "config",
                 "tls/key.pem", "objects/private-bucket/deep/object.txt"):
        assert _mode(data / name) == 0o600, name
    for path in data.rglob("*"):
        if path.name != "old-notes.txt":  # an earlier version's file: shut in by its folder's 0700
            assert _mode(path) & 0o077 == 0, path


@embedded_only
def test_objects_the_server_writes_are_private(server, tiny_model, second_account):
    """Invocation logs are written by the server process itself (the other files above by the CLI or at start)."""
    account, key = second_account
    outcrop(server, "s3", "mb", "s3://private-logs", "--account", account)
    bedrock = server.client("bedrock", key=key)
    bedrock.put_model_invocation_logging_configuration(loggingConfig={
        "s3Config": {"bucketName": "private-logs", "keyPrefix": "x"}, "textDataDeliveryEnabled": True})
    try:
        server.client("bedrock-runtime", key=key).converse(modelId=tiny_model, messages=QUESTION,
                                                           inferenceConfig={"maxTokens": 2})
        folder = server.data_dir / "objects" / "private-logs"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not list(folder.rglob("*.json.gz")):
            time.sleep(0.3)
        logs = list(folder.rglob("*.json.gz"))
        assert logs and gzip.decompress(logs[0].read_bytes())
    finally:
        bedrock.delete_model_invocation_logging_configuration()
    for path in logs:
        assert _mode(path) == 0o600
        for parent in path.relative_to(server.data_dir).parents:
            assert parent == Path(".") or _mode(server.data_dir / parent) == 0o700, parent
    assert _mode(server.data_dir) == 0o700 and _mode(server.data_dir / "outcrop.db") == 0o600
