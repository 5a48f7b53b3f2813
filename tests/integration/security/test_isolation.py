"""Two accounts on one server, and limited users inside one: buckets, model names and access keys.

Each test is an attack that once worked: a second account reading the first one's bucket through a
role, a denied model invoked under another spelling of its ARN, a user switching off the root's key.
"""

from __future__ import annotations

import json
import subprocess
import sys
from urllib.parse import quote

import pytest

from tests.integration.security.helpers import QUESTION, error_code, outcrop


def attempt(server, *args: str) -> subprocess.CompletedProcess:
    """`outcrop ...` that may fail (the attacks are expected to)."""
    return subprocess.run([sys.executable, "-m", "outcrop", *args, "--data-dir", str(server.data_dir)],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def victim_bucket(server, tmp_path_factory) -> str:
    secret = tmp_path_factory.mktemp("victim") / "secret.jsonl"
    secret.write_text('{"prompt": "the launch code", "completion": "0000"}\n')
    outcrop(server, "s3", "mb", "s3://victim-data")
    outcrop(server, "s3", "cp", str(secret), "s3://victim-data/train/secret.jsonl")
    return "victim-data"


def test_another_account_cannot_reach_a_bucket_by_any_route(server, second_account, victim_bucket, tmp_path):
    account_b, key_b = second_account
    # A role of B may not be granted A's bucket, by the CLI or by B's root through the API.
    refused = attempt(server, "iam", "create-role", "--account", account_b, "--name", "thief",
                      "--s3-access", victim_bucket)
    assert refused.returncode != 0 and "no bucket of account" in refused.stderr
    status, _, body = server.raw("POST", "/_outcrop/iam/CreateRole", json.dumps(
        {"RoleName": "thief", "S3Access": victim_bucket}).encode(), key=key_b)
    assert (status, body["__type"]) == (403, "AccessDeniedException")
    # A role whose own policy allows all of S3 still cannot read it through a job; a missing key and a
    # present one (and a missing bucket) answer alike.
    role = outcrop(server, "iam", "create-role", "--account", account_b, "--name", "greedy").stdout.strip()
    (tmp_path / "all.json").write_text(json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    outcrop(server, "iam", "put-role-policy", "--account", account_b, "--role-name", "greedy",
            "--policy-name", "all-s3", "--policy-document", f"file://{tmp_path / 'all.json'}")
    bedrock_b = server.client("bedrock", key=key_b)
    answers = []
    for uri in ("s3://victim-data/train/secret.jsonl", "s3://victim-data/train/nothing.jsonl",
                "s3://no-such-bucket-x/train/secret.jsonl"):
        code, status, message = error_code(lambda uri=uri: bedrock_b.create_model_customization_job(
            jobName="steal", customModelName="stolen", roleArn=role,
            baseModelIdentifier="huggingface.smollm2-135m-instruct-v1:0", customizationType="FINE_TUNING",
            trainingDataConfig={"s3Uri": uri}, outputDataConfig={"s3Uri": "s3://victim-data/out/"},
            hyperParameters={"epochCount": "1"}))
        answers.append((code, status, message.replace(uri.removeprefix("s3://"), "OBJECT")))
    assert answers[0][:2] == ("AccessDeniedException", 403)
    assert answers[0] == answers[1] == answers[2]
    # B's invocation logs cannot be sent into A's bucket; the answer is the one a missing bucket gets.
    foreign = error_code(lambda: bedrock_b.put_model_invocation_logging_configuration(
        loggingConfig={"s3Config": {"bucketName": victim_bucket}}))
    missing = error_code(lambda: bedrock_b.put_model_invocation_logging_configuration(
        loggingConfig={"s3Config": {"bucketName": "no-such-bucket-x"}}))
    assert foreign[0] == "ValidationException"
    assert foreign[2].replace(victim_bucket, "B") == missing[2].replace("no-such-bucket-x", "B")
    # `outcrop s3` as B sees only B's buckets, and A's name cannot be taken over.
    listing = outcrop(server, "s3", "ls", "--account", account_b).stdout
    assert victim_bucket not in listing
    read = attempt(server, "s3", "cp", "s3://victim-data/train/secret.jsonl", "-", "--account", account_b)
    gone = attempt(server, "s3", "cp", "s3://victim-dat4/train/secret.jsonl", "-", "--account", account_b)
    assert read.returncode != 0 and read.stderr.replace("victim-data", "B") == gone.stderr.replace("victim-dat4", "B")
    assert "BucketAlreadyExists" in attempt(server, "s3", "mb", "s3://victim-data", "--account", account_b).stderr


def test_a_bucket_policy_naming_the_other_account_lets_it_read(server, second_account, victim_bucket, tmp_path):
    account_b, _ = second_account
    (tmp_path / "share.json").write_text(json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account_b}:root"}, "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{victim_bucket}/train/*"}]}))
    outcrop(server, "s3", "put-bucket-policy", f"s3://{victim_bucket}", "--policy", f"file://{tmp_path / 'share.json'}")
    try:
        assert attempt(server, "s3", "cp", f"s3://{victim_bucket}/train/secret.jsonl", "-",
                       "--account", account_b).returncode == 0
        written = attempt(server, "s3", "cp", str(tmp_path / "share.json"), f"s3://{victim_bucket}/train/planted",
                          "--account", account_b)
        assert written.returncode != 0 and "AccessDenied" in written.stderr
    finally:
        outcrop(server, "s3", "delete-bucket-policy", f"s3://{victim_bucket}")


@pytest.fixture(scope="module")
def mallory(server, tiny_model, tmp_path_factory):
    """A user allowed all of Bedrock except invoking the tiny model, named by its canonical ARN."""
    outcrop(server, "iam", "create-user", "--name", "mallory")
    key = json.loads(outcrop(server, "iam", "create-access-key", "--user-name", "mallory").stdout)
    policy = tmp_path_factory.mktemp("mallory") / "policy.json"
    policy.write_text(json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "bedrock:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "bedrock:*",
         "Resource": f"arn:aws:bedrock:us-east-1::foundation-model/{tiny_model}"}]}))
    outcrop(server, "iam", "put-user-policy", "--user-name", "mallory", "--policy-name", "no-tiny",
            "--policy-document", f"file://{policy}")
    return key["AccessKeyId"], key["SecretAccessKey"]


def test_a_denied_model_stays_denied_however_it_is_named(server, tiny_model, mallory):
    runtime = server.client("bedrock-runtime", key=mallory)
    bedrock = server.client("bedrock", key=mallory)

    def converse(model_id: str):
        return error_code(lambda: runtime.converse(modelId=model_id, messages=QUESTION,
                                                   inferenceConfig={"maxTokens": 2}))

    canonical = f"arn:aws:bedrock:us-east-1::foundation-model/{tiny_model}"
    for spelling in (tiny_model, canonical):
        code, _, message = converse(spelling)
        assert code == "AccessDeniedException" and canonical in message, spelling
    # boto3 percent-encodes the label itself, so an encoded ARN arrives encoded twice: refused, never run.
    assert converse(quote(canonical, safe=""))[0] in ("AccessDeniedException", "ValidationException")
    for spelling in (f"arn:aws-cn:bedrock:us-east-1::foundation-model/{tiny_model}",
                     f"arn:aws-x:bedrock:us-east-1::foundation-model/{tiny_model}",
                     f"arn:aws:bedrock:eu-west-1::foundation-model/{tiny_model}",
                     f"arn:aws:bedrock-x:us-east-1::foundation-model/{tiny_model}"):
        code, status, _ = converse(spelling)
        assert (code, status) == ("ValidationException", 400), spelling
        assert error_code(lambda s=spelling: bedrock.get_foundation_model(modelIdentifier=s))[0] \
            == "ValidationException"
    assert error_code(lambda: runtime.count_tokens(modelId=canonical.replace("us-east-1", "us-west-2"),
                                                   input={"converse": {"messages": QUESTION}}))[0] \
        == "ValidationException"
    # The same user still reaches the models the policy leaves open, by any valid spelling.
    assert bedrock.get_foundation_model(
        modelIdentifier="arn:aws:bedrock:us-east-1::foundation-model/huggingface.smollm2-135m-instruct-v1:0")


def test_key_actions_act_on_the_keys_real_holder(server, tmp_path):
    outcrop(server, "iam", "create-user", "--name", "dave")
    dave = json.loads(outcrop(server, "iam", "create-access-key", "--user-name", "dave").stdout)
    dave_key = (dave["AccessKeyId"], dave["SecretAccessKey"])
    (tmp_path / "own-keys.json").write_text(json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": ["iam:UpdateAccessKey", "iam:DeleteAccessKey", "iam:ListAccessKeys",
                                      "iam:CreateAccessKey"],
        "Resource": "arn:aws:iam::*:user/${aws:username}"}]}))
    outcrop(server, "iam", "put-user-policy", "--user-name", "dave", "--policy-name", "own-keys",
            "--policy-document", f"file://{tmp_path / 'own-keys.json'}")
    root_key_id = server.root_key()[0]

    def iam(action: str, body: dict) -> tuple[int, dict]:
        status, _, answer = server.raw("POST", f"/_outcrop/iam/{action}", json.dumps(body).encode(), key=dave_key)
        return status, answer

    # Naming himself while naming the root's key: the key is not his, so it "does not exist".
    for action, extra in (("UpdateAccessKey", {"Status": "Inactive"}), ("DeleteAccessKey", {})):
        for holder in ({"UserName": "dave"}, {}):
            status, answer = iam(action, {"AccessKeyId": root_key_id, **holder, **extra})
            assert (status, answer["__type"]) == (404, "ResourceNotFoundException"), (action, holder)
    assert server.client("bedrock").list_foundation_models()["modelSummaries"]  # the root's key still works
    # His own keys he manages, with or without naming himself.
    status, answer = iam("ListAccessKeys", {})
    assert status == 200 and [k["AccessKeyId"] for k in answer["AccessKeyMetadata"]] == [dave["AccessKeyId"]]
    assert iam("UpdateAccessKey", {"AccessKeyId": dave["AccessKeyId"], "Status": "Active"})[0] == 200
    # Roles are never signed in as: no keys for them, by the API or the CLI.
    outcrop(server, "iam", "create-role", "--name", "keyless")
    status, _, answer = server.raw("POST", "/_outcrop/iam/CreateAccessKey",
                                   json.dumps({"RoleName": "keyless"}).encode())
    assert (status, answer["__type"]) == (400, "ValidationException")
