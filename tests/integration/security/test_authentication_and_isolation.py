"""Authentication, authorization, isolation, logging, audit and quotas, as clients meet them."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import subprocess
import sys
import time

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.backends import objects, query
from tests.conftest import start_server, stop_server
from tests.integration.security.helpers import QUESTION, error_code, outcrop

# -- authentication --------------------------------------------------------------------------------

def test_unsigned_request_is_refused(server):
    status, headers, body = server.raw("GET", "/foundation-models", sign=False)
    assert status == 403
    assert body["__type"] == headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"


def test_unknown_key_is_unrecognized(server):
    client = server.client("bedrock", key=("AKIANOSUCHKEY0000000", "whatever"))
    assert error_code(client.list_foundation_models)[:2] == ("UnrecognizedClientException", 403)


def test_wrong_secret_is_an_invalid_signature(server):
    key_id, _ = server.root_key()
    client = server.client("bedrock", key=(key_id, "not-the-secret"))
    code, status, message = error_code(client.list_foundation_models)
    assert (code, status) == ("InvalidSignatureException", 403)
    assert "signature we calculated does not match" in message


def test_signature_older_than_fifteen_minutes_is_expired(server, monkeypatch):
    import botocore.auth

    then = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=20)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: then.replace(tzinfo=None))
    code, status, message = error_code(server.client("bedrock").list_foundation_models)
    assert (code, status) == ("InvalidSignatureException", 403)
    assert message.startswith("Signature expired")


def test_aws_cli_with_a_wrong_secret_fails(server, tmp_path):
    (tmp_path / "credentials").write_text(
        f"[outcrop]\naws_access_key_id = {server.root_key()[0]}\naws_secret_access_key = wrong\n")
    env = {**server.cli_env(), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials")}
    result = subprocess.run([sys.executable, "-m", "awscli", "bedrock", "list-foundation-models", "--endpoint-url",
                             server.endpoint], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0 and "InvalidSignatureException" in result.stderr


def test_bearer_api_key_over_https(tmp_path, monkeypatch):
    """boto3 sends bearer keys over HTTPS only, so this runs against `outcrop serve --tls`."""
    tls = start_server(tmp_path / "data", {"OUTCROP_TLS": "on"})
    try:
        assert "certificate" in tls.banner
        created = json.loads(outcrop(tls, "iam", "create-access-key", "--bearer").stdout)
        assert created["ApiKey"].startswith("ABSK")

        def bearer_client(token: str):
            monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", token)
            return boto3.client("bedrock", endpoint_url=tls.endpoint, region_name="us-east-1",
                                verify=str(tls.data_dir / "tls" / "cert.pem"),
                                config=Config(retries={"max_attempts": 1}))
        assert bearer_client(created["ApiKey"]).list_foundation_models()["modelSummaries"]
        wrong = bearer_client(created["ApiKey"][:-6] + "AAAAAA")
        assert error_code(wrong.list_foundation_models)[0] == "UnrecognizedClientException"
    finally:
        stop_server(tls)


def test_secrets_are_stored_encrypted_and_never_logged(server):
    key_id, secret = server.root_key()
    [(stored,)] = query(server.data_dir, "SELECT secret FROM access_keys WHERE access_key_id = ?", key_id)
    assert secret not in stored
    assert not any(secret in line for line in server.output)


# -- authorization ---------------------------------------------------------------------------------

def test_a_user_without_policies_is_denied_by_default(server, alice):
    code, status, message = error_code(server.client("bedrock", key=alice).list_foundation_models)
    assert (code, status) == ("AccessDeniedException", 403)
    assert message.endswith("because no identity-based policy allows the bedrock:ListFoundationModels action")
    assert "user/alice" in message


def test_explicit_deny_wins_and_converse_needs_invoke_model(server, alice, tiny_model, tmp_path):
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "bedrock:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "bedrock:InvokeModel", "Resource": "*"}]}
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    outcrop(server, "iam", "put-user-policy", "--user-name", "alice", "--policy-name", "no-invoke",
            "--policy-document", f"file://{tmp_path / 'policy.json'}")
    bedrock, runtime = server.client("bedrock", key=alice), server.client("bedrock-runtime", key=alice)
    assert bedrock.list_foundation_models()["modelSummaries"]  # takes effect at once, no restart
    code, _, message = error_code(lambda: runtime.converse(modelId=tiny_model, messages=QUESTION,
                                                           inferenceConfig={"maxTokens": 2}))
    assert code == "AccessDeniedException"
    assert "bedrock:InvokeModel on resource: arn:aws:bedrock:us-east-1::foundation-model/" in message
    assert message.endswith("with an explicit deny in an identity-based policy")
    counted = runtime.count_tokens(modelId=tiny_model, input={"converse": {"messages": QUESTION}})
    assert counted["inputTokens"] > 0


def test_iam_json_api(server, alice):
    status, _, body = server.raw("POST", "/_outcrop/iam/CreateUser", json.dumps({"UserName": "bob"}).encode())
    assert status == 200 and body["Arn"].endswith(":user/bob")
    status, _, body = server.raw("POST", "/_outcrop/iam/ListUsers", b"{}")
    assert any(arn.endswith(":user/alice") for arn in body["Users"])
    status, _, body = server.raw("POST", "/_outcrop/iam/CreateUser", json.dumps({"UserName": "carol"}).encode(),
                                 key=alice)
    assert status == 403 and body["__type"] == "AccessDeniedException" and "iam:CreateUser" in body["message"]
    status, _, body = server.raw("POST", "/_outcrop/iam/NoSuchAction", b"{}")
    assert status == 404 and body["__type"] == "UnknownOperationException"


# -- accounts, logging, audit ----------------------------------------------------------------------

def test_invocation_logging_is_written_to_the_store_and_is_per_account(server, tiny_model, second_account):
    outcrop(server, "s3", "mb", "s3://invocation-logs")
    bedrock = server.client("bedrock")
    bedrock.put_model_invocation_logging_configuration(loggingConfig={
        "s3Config": {"bucketName": "invocation-logs", "keyPrefix": "bedrock"}, "textDataDeliveryEnabled": True})
    assert bedrock.get_model_invocation_logging_configuration()["loggingConfig"]["s3Config"]["bucketName"] \
        == "invocation-logs"
    other = server.client("bedrock", key=second_account[1])
    assert "loggingConfig" not in other.get_model_invocation_logging_configuration()

    response = server.client("bedrock-runtime").converse(modelId=tiny_model, messages=QUESTION,
                                                         inferenceConfig={"maxTokens": 3})
    request_id = response["ResponseMetadata"]["RequestId"]
    records, written = [], {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(r["requestId"] == request_id for r in records):
        time.sleep(0.5)
        written = objects(server.data_dir, "s3://invocation-logs/bedrock/", ".json.gz")
        records = [json.loads(line) for data in written.values() for line in gzip.decompress(data).splitlines()]
    record = next(r for r in records if r["requestId"] == request_id)
    assert record["operation"] == "Converse" and record["modelId"] == tiny_model
    assert record["identity"]["arn"].endswith(":root")
    assert record["input"]["inputBodyJson"]["messages"][0]["content"][0]["text"] == "hello world"
    assert record["output"]["outputTokenCount"] == response["usage"]["outputTokens"]
    assert all("/AWSLogs/" in key for key in written)
    bedrock.delete_model_invocation_logging_configuration()
    assert "loggingConfig" not in bedrock.get_model_invocation_logging_configuration()


def test_logging_to_a_missing_bucket_is_a_validation_error(server):
    code, status, message = error_code(lambda: server.client("bedrock").put_model_invocation_logging_configuration(
        loggingConfig={"s3Config": {"bucketName": "no-such-bucket"}}))
    assert (code, status) == ("ValidationException", 400) and "no-such-bucket" in message


def test_usage_and_audit_belong_to_the_caller_account(server, tiny_model, second_account):
    account_b, key_b = second_account
    response = server.client("bedrock-runtime", key=key_b).converse(
        modelId=tiny_model, messages=QUESTION, inferenceConfig={"maxTokens": 2})
    [(account,)] = query(server.data_dir, "SELECT account_id FROM usage_records WHERE request_id = ?",
                         response["ResponseMetadata"]["RequestId"])
    assert account == account_b
    server.client("bedrock", key=key_b).list_foundation_models()
    events = [json.loads(line) for line in
              outcrop(server, "audit", "--account", account_b, "--json").stdout.splitlines()]
    assert events and all(e["account_id"] == account_b for e in events)
    assert any(e["operation"] == "ListFoundationModels" for e in events)


def test_audit_records_refusals_with_source_address(server, alice):
    with pytest.raises(ClientError):
        server.client("bedrock", key=(alice[0], "wrong")).get_foundation_model(
            modelIdentifier="huggingface.smollm2-135m-instruct-v1:0")
    events = [json.loads(line) for line in outcrop(server, "audit", "--failed", "--json").stdout.splitlines()]
    refused = [e for e in events if e["result"] == "InvalidSignatureException"]
    assert refused and refused[0]["source_ip"] == "127.0.0.1" and refused[0]["operation"] == "GetFoundationModel"


# -- service roles ---------------------------------------------------------------------------------

def test_create_role_prints_the_arn_alone(server):
    outcrop(server, "s3", "mb", "s3://datasets")  # a role is granted only a bucket its account has
    result = outcrop(server, "iam", "create-role", "--name", "training", "--s3-access", "datasets/train",
                     "--read-only")
    assert result.stdout.count("\n") == 1
    assert result.stdout.strip().startswith("arn:aws:iam::") and result.stdout.strip().endswith(":role/training")


# -- quotas and auth off ---------------------------------------------------------------------------

def test_quota_throttles_and_auth_off_is_announced(tmp_path, tiny_model_dir):
    server = start_server(tmp_path / "data", {"OUTCROP_QUOTA_REQUESTS_PER_MINUTE": "2", "OUTCROP_AUTH": "off"})
    try:
        assert "authentication is OFF" in server.banner
        status, _, _ = server.raw("GET", "/foundation-models", sign=False)
        assert status == 200
        subprocess.run([sys.executable, "-m", "outcrop", "models", "register", "tiny", str(tiny_model_dir),
                        "--data-dir", str(server.data_dir)], check=True, capture_output=True, timeout=120)
        runtime = server.client("bedrock-runtime")
        for _ in range(2):
            runtime.converse(modelId="local.tiny-v1:0", messages=QUESTION, inferenceConfig={"maxTokens": 1})
        code, status, message = error_code(lambda: runtime.converse(
            modelId="local.tiny-v1:0", messages=QUESTION, inferenceConfig={"maxTokens": 1}))
        assert (code, status) == ("ThrottlingException", 429) and "2 requests per minute" in message
    finally:
        stop_server(server)
