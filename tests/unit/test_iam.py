"""IAM without HTTP: accounts, keys, policies, service-role checks, SigV4 verification, idempotency."""

from __future__ import annotations

import datetime as dt
from unittest import mock

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from outcrop.errors import AccessDeniedException, ConflictException, InvalidSignatureException, ValidationException
from outcrop.iam import sigv4
from outcrop.iam.service import BEARER, IamService, s3_access_policy
from outcrop.platform.idempotency import run_once


def test_bootstrap_is_stable_and_honours_an_explicit_key(iam, db, tmp_path):
    first = iam.bootstrap()
    assert first.access_key_id.startswith("AKIA") and len(first.secret) == 40
    assert iam.bootstrap() == first
    explicit = IamService(db, tmp_path).bootstrap("AKIAEXPLICIT00000000", "s3cr3t")
    assert iam.authenticate_key("AKIAEXPLICIT00000000")[0].is_root
    assert explicit.principal_arn == first.principal_arn
    with pytest.raises(ValueError):
        iam.bootstrap("AKIAEXPLICIT00000000", "another secret")


def test_keys_can_be_deactivated_and_bearer_tokens_are_hashed(iam):
    root = iam.bootstrap()
    iam.set_key_status(root.access_key_id, "Inactive")
    assert iam.authenticate_key(root.access_key_id) is None
    bearer = iam.create_access_key(root.principal_arn, BEARER)
    assert iam.authenticate_bearer(bearer.secret).is_root
    assert iam.authenticate_bearer(bearer.secret + "x") is None
    assert iam.authenticate_bearer("ABSK!!notbase64") is None


def test_service_role_check_names_the_missing_permission(iam):
    account = iam.bootstrap().principal_arn.split(":")[4]
    role = iam.create_role(account, "trainer")
    iam.put_policy(role.arn, "s3-access", s3_access_policy("datasets", "train", read_only=True))
    read = ("s3:GetObject", "arn:aws:s3:::datasets/train/data.jsonl")
    assert iam.check_role(role.arn, account, [read]).name == "trainer"
    with pytest.raises(AccessDeniedException, match="s3:PutObject on resource: arn:aws:s3:::datasets/train/out"):
        iam.check_role(role.arn, account, [read, ("s3:PutObject", "arn:aws:s3:::datasets/train/out")])
    with pytest.raises(AccessDeniedException, match="s3:GetObject"):
        iam.check_role(role.arn, account, [("s3:GetObject", "arn:aws:s3:::datasets/other/x")])
    bare = iam.create_role(account, "empty")
    with pytest.raises(AccessDeniedException, match="no identity-based policy allows the s3:GetObject action"):
        iam.check_role(bare.arn, account, [read])


def test_role_must_trust_bedrock_and_live_in_the_account(iam):
    account = iam.bootstrap().principal_arn.split(":")[4]
    untrusting = iam.create_role(account, "ec2-only", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
    with pytest.raises(AccessDeniedException, match="does not trust bedrock.amazonaws.com"):
        iam.check_role(untrusting.arn, account, [])
    with pytest.raises(AccessDeniedException, match="another account"):
        iam.check_role(untrusting.arn, "999999999999", [])
    with pytest.raises(ValidationException, match="not an IAM role ARN"):
        iam.check_role("arn:aws:iam::123:user/x", account, [])


def test_malformed_policies_never_reach_the_table(iam):
    account = iam.bootstrap().principal_arn.split(":")[4]
    user = iam.create_user(account, "dave")
    with pytest.raises(ValidationException, match="Effect"):
        iam.put_policy(user.arn, "bad", {"Statement": [{"Effect": "Maybe", "Action": "*", "Resource": "*"}]})
    assert iam.policy_documents(user.arn) == {}
    with pytest.raises(ConflictException):
        iam.create_user(account, "dave")


def _signed(secret: str, when: dt.datetime, body: bytes = b"{}") -> tuple[dict[str, str], sigv4.Authorization]:
    """A request signed by botocore's own signer at a chosen time."""
    request = AWSRequest(method="POST", url="http://127.0.0.1:8600/model/a.b%3A0/converse", data=body)
    with mock.patch("botocore.auth.get_current_datetime", lambda: when.replace(tzinfo=None)):
        SigV4Auth(Credentials("AKIAEXAMPLE", secret), "bedrock", "us-east-1").add_auth(request)
    headers = {k.lower(): v for k, v in request.headers.items()}
    headers["host"] = "127.0.0.1:8600"
    return headers, sigv4.parse_authorization(headers["authorization"])


def _verify(headers, auth, secret="s3cr3t", body=b"{}", now=None):
    sigv4.verify(auth, secret, method="POST", raw_path="/model/a.b%3A0/converse", query="", headers=headers,
                 body=body, now=now)


def test_sigv4_accepts_botocore_signatures_within_fifteen_minutes():
    now = dt.datetime.now(dt.UTC)
    headers, auth = _signed("s3cr3t", now - dt.timedelta(minutes=14))
    _verify(headers, auth, now=now)
    headers, auth = _signed("s3cr3t", now + dt.timedelta(minutes=16))
    with pytest.raises(InvalidSignatureException, match="Signature expired.*later than"):
        _verify(headers, auth, now=now)


def test_sigv4_refuses_a_tampered_body_and_a_wrong_service():
    headers, auth = _signed("s3cr3t", dt.datetime.now(dt.UTC))
    with pytest.raises(InvalidSignatureException, match="does not match"):
        _verify(headers, auth, body=b'{"tampered": true}')
    wrong = sigv4.Authorization(auth.access_key_id, auth.date, auth.region, "s3", auth.signed_headers, auth.signature)
    with pytest.raises(InvalidSignatureException, match="service"):
        _verify(headers, wrong)


def test_idempotency_token_returns_the_first_answer(db):
    created = []

    def create():
        created.append(1)
        return {"jobArn": f"arn:job/{len(created)}"}
    params = {"jobName": "a", "clientRequestToken": "t-1"}
    first = run_once(db, account_id="111111111111", operation="CreateX", token="t-1", params=params,
                     token_member="clientRequestToken", create=create)
    again = run_once(db, account_id="111111111111", operation="CreateX", token="t-1", params=params,
                     token_member="clientRequestToken", create=create)
    assert first == again == {"jobArn": "arn:job/1"} and len(created) == 1
    with pytest.raises(ConflictException, match="t-1"):
        run_once(db, account_id="111111111111", operation="CreateX", token="t-1",
                 params={"jobName": "b", "clientRequestToken": "t-1"}, token_member="clientRequestToken",
                 create=create)
    other_account = run_once(db, account_id="222222222222", operation="CreateX", token="t-1", params=params,
                             token_member="clientRequestToken", create=create)
    assert other_account == {"jobArn": "arn:job/2"}
