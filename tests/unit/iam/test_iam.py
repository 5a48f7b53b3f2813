"""IAM without HTTP: accounts, keys, policies, service-role checks, SigV4 verification, idempotency."""

from __future__ import annotations

import datetime as dt
from unittest import mock

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from outcrop.errors import (
    AccessDeniedException,
    ConflictException,
    InvalidSignatureException,
    ResourceNotFoundException,
    ValidationException,
)
from outcrop.iam import buckets, sigv4
from outcrop.iam.principal import Principal
from outcrop.iam.service import BEARER, IamService, s3_access_policy
from outcrop.platform.config import VECTOR_BUCKET
from outcrop.platform.idempotency import run_once
from outcrop.platform.objectstore import LocalObjectStore


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


def test_service_role_check_names_the_missing_permission(iam, tmp_path):
    account = iam.bootstrap().principal_arn.split(":")[4]
    buckets.create(iam.db, LocalObjectStore(tmp_path / "objects"), account, "datasets")
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


# -- buckets belong to accounts ----------------------------------------------------------------------

def test_a_bucket_is_reached_only_by_its_own_account_or_by_name_in_its_policy(iam, tmp_path):
    store = LocalObjectStore(tmp_path / "objects")
    first = iam.bootstrap().principal_arn.split(":")[4]
    second = iam.create_account("tenant-b").principal_arn.split(":")[4]
    buckets.create(iam.db, store, first, "first-data")
    store.put_bytes("s3://first-data/train.jsonl", b"{}")
    thief = iam.create_role(second, "thief")
    # Its own policy allows everything in S3; the bucket is still out of reach, for roles and roots alike.
    iam.put_policy(thief.arn, "all-s3", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})
    with pytest.raises(AccessDeniedException) as existing:
        iam.authorize(thief, "s3:GetObject", "arn:aws:s3:::first-data/train.jsonl")
    with pytest.raises(AccessDeniedException) as missing:
        iam.authorize(thief, "s3:GetObject", "arn:aws:s3:::first-dat4/train.jsonl")
    assert existing.value.message.replace("first-data", "B") == missing.value.message.replace("first-dat4", "B")
    with pytest.raises(AccessDeniedException):
        iam.authorize(Principal.account_root(second), "s3:PutObject", "arn:aws:s3:::first-data/x")
    with pytest.raises(AccessDeniedException, match="no bucket of account"):
        iam.create_service_role(second, "borrower", s3_access="first-data/train")
    assert [p.name for p in iam.list_principals(second, "role")] == ["thief"]
    with pytest.raises(ConflictException, match="BucketAlreadyExists"):
        buckets.create(iam.db, store, second, "first-data")
    # A bucket policy that names the other account explicitly lets its principals in, for what it says only,
    # and still only as far as their own policies allow.
    buckets.put_policy(iam.db, first, "first-data", {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": second}, "Action": "s3:GetObject",
        "Resource": "arn:aws:s3:::first-data/*"}]})
    iam.authorize(thief, "s3:GetObject", "arn:aws:s3:::first-data/train.jsonl")
    with pytest.raises(AccessDeniedException):
        iam.authorize(thief, "s3:PutObject", "arn:aws:s3:::first-data/train.jsonl")
    with pytest.raises(AccessDeniedException, match="no identity-based policy"):
        iam.authorize(iam.create_role(second, "bare"), "s3:GetObject", "arn:aws:s3:::first-data/train.jsonl")
    with pytest.raises(ValidationException, match="Principal"):
        buckets.put_policy(iam.db, first, "first-data", {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]})


def test_buckets_made_before_owners_were_recorded_go_to_the_first_account(iam, tmp_path):
    store = LocalObjectStore(tmp_path / "objects")
    first = iam.bootstrap().principal_arn.split(":")[4]
    iam.create_account("tenant-b")
    store.create_bucket("legacy")  # as an earlier version made it: a folder, no owner row
    assert buckets.owner(iam.db, "legacy") is None
    # Only a database upgraded from before owners were recorded adopts, and only once.
    assert buckets.adopt_after_upgrade(iam.db, store, lambda: first) == []
    iam.db.upgraded_from = "0008"
    assert buckets.adopt_after_upgrade(iam.db, store, lambda: first) == ["legacy"]
    assert buckets.owner(iam.db, "legacy") == first
    assert buckets.adopt(iam.db, store, first) == []
    # Outcrop's own bucket for knowledge bases' vectors (on an S3 endpoint) is nobody's, adopted or claimed.
    store.create_bucket(VECTOR_BUCKET)
    assert buckets.adopt(iam.db, store, first) == [] and buckets.owner(iam.db, VECTOR_BUCKET) is None
    with pytest.raises(ConflictException, match="BucketAlreadyExists"):
        buckets.create(iam.db, store, first, VECTOR_BUCKET)
    # A bucket policy's Deny binds the owner's own principals too, and its conditions see who is asking.
    buckets.create(iam.db, store, first, "guarded")
    reader = iam.create_role(first, "reader")
    iam.put_policy(reader.arn, "read", s3_access_policy("guarded"))
    iam.authorize(reader, "s3:GetObject", "arn:aws:s3:::guarded/a")
    buckets.put_policy(iam.db, first, "guarded", {"Version": "2012-10-17", "Statement": [{
        "Effect": "Deny", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::guarded/*",
        "Condition": {"StringEquals": {"aws:PrincipalArn": reader.arn}}}]})
    with pytest.raises(AccessDeniedException, match="explicit deny in a resource-based policy"):
        iam.authorize(reader, "s3:GetObject", "arn:aws:s3:::guarded/a")


def test_key_actions_need_the_key_to_be_the_holders(iam):
    account = iam.bootstrap().principal_arn.split(":")[4]
    root_key = iam.bootstrap()
    alice = iam.create_user(account, "alice")
    mine = iam.create_access_key(alice.arn)
    with pytest.raises(ResourceNotFoundException):
        iam.set_key_status(root_key.access_key_id, "Inactive", owner=alice.arn)
    with pytest.raises(ResourceNotFoundException):
        iam.delete_access_key(root_key.access_key_id, owner=alice.arn)
    assert iam.authenticate_key(root_key.access_key_id) is not None
    iam.set_key_status(mine.access_key_id, "Inactive", owner=alice.arn)
    assert [k["Status"] for k in iam.list_access_keys(alice.arn)] == ["Inactive"]


def test_roles_get_no_access_keys(iam):
    account = iam.bootstrap().principal_arn.split(":")[4]
    role = iam.create_role(account, "trainer")
    with pytest.raises(ValidationException, match="roles have no access keys"):
        iam.create_access_key(role.arn)
