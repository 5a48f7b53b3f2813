"""Bucket ownership: every bucket belongs to one account, as on S3.

The object store itself (a folder, or one S3 endpoint shared by every account) knows no accounts, so
ownership lives in the `buckets` table. Every S3 action IAM authorizes (`IamService.authorize`) first
asks `check_access` here: a principal reaches a bucket of its own account, or one whose bucket policy
names it (or its account) explicitly; nothing else. A bucket that does not exist and a bucket of
another account answer the same AccessDeniedException, so another account learns nothing about
which names or keys exist.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from outcrop.errors import AccessDeniedException, ConflictException, ValidationException
from outcrop.iam.policy import evaluate_resource_policy, parse_policy
from outcrop.iam.principal import Principal
from outcrop.iam.tables import AccountRow, BucketRow
from outcrop.platform.config import VECTOR_BUCKET
from outcrop.platform.database import Database, utc_now
from outcrop.platform.objectstore import BucketNotFound, ObjectStore, S3Uri

log = logging.getLogger(__name__)

_S3_ARN = "arn:aws:s3:::"
#: S3 actions on no one bucket: creating one (which makes it the creator's; `create` refuses taken names) and
#: listing one's own.
UNSCOPED = frozenset({"s3:CreateBucket", "s3:ListAllMyBuckets"})


def bucket_of(resource: str) -> str | None:
    """The bucket an S3 ARN (`arn:aws:s3:::bucket` or `arn:aws:s3:::bucket/key`) names, else None."""
    if not resource.startswith(_S3_ARN):
        return None
    return resource[len(_S3_ARN):].split("/", 1)[0] or None


def owner(db: Database, bucket: str) -> str | None:
    with db.session() as session:
        return session.scalar(select(BucketRow.account_id).where(BucketRow.name == bucket))


def owned_buckets(db: Database, account: str) -> list[str]:
    with db.session() as session:
        return list(session.scalars(select(BucketRow.name).where(BucketRow.account_id == account)
                                    .order_by(BucketRow.name)))


def check_access(db: Database, principal: Principal, action: str, resource: str,
                 context: dict[str, Any] | None = None) -> None:
    """Raise AccessDeniedException unless the bucket behind an S3 resource is the principal's account's,
    or its bucket policy allows this principal the action. Identity policies are checked after this."""
    if action in UNSCOPED:
        return
    bucket = bucket_of(resource)
    with db.session() as session:
        row = session.get(BucketRow, bucket) if bucket else None
        owner_account, policy_text = (row.account_id, row.policy) if row is not None else (None, None)
    decision = None
    if policy_text:
        policy = parse_policy(policy_text, name=f"bucket policy of {bucket}")
        decision = evaluate_resource_policy(policy, principal.arn, principal.account_id, action, resource, context)
        if decision.reason == "explicit deny":  # as on S3, a bucket policy's Deny binds its own account too
            raise AccessDeniedException(f"User: {principal.arn} is not authorized to perform: {action} on resource: "
                                        f"{resource} with an explicit deny in a resource-based policy")
    if owner_account is not None and owner_account == principal.account_id:
        return
    if decision is not None and decision.allowed:
        return
    # One answer for "no such bucket" and "someone else's bucket": the name's existence is not the caller's.
    raise AccessDeniedException(f"User: {principal.arn} is not authorized to perform: {action} on resource: "
                                f"{resource}: no bucket of account {principal.account_id} has that name, and no "
                                "bucket policy grants it")


#: Buckets no account may own: Outcrop's own, on an S3 endpoint it shares with the accounts' buckets.
RESERVED_BUCKETS = frozenset({VECTOR_BUCKET})


def create(db: Database, store: ObjectStore, account: str, bucket: str) -> None:
    """Create a bucket owned by `account`. Creating one's own bucket again is no error (as S3's
    BucketAlreadyOwnedByYou in us-east-1); a name another account holds is BucketAlreadyExists. A bucket
    that exists in the store with no owner (made outside Outcrop) becomes the account's."""
    S3Uri(bucket)  # the name's rules, before anything is recorded
    if bucket in RESERVED_BUCKETS:
        raise ConflictException(f"BucketAlreadyExists: the bucket name {bucket} is not available; Outcrop keeps "
                                "the knowledge bases' vectors there")
    try:
        with db.session() as session:
            if session.get(AccountRow, account) is None:
                raise ValidationException(f"Account {account} does not exist")
            row = session.get(BucketRow, bucket)
            if row is not None and row.account_id != account:
                raise ConflictException(f"BucketAlreadyExists: the bucket name {bucket} is not available; "
                                        "bucket names are shared by every account of this deployment")
            if row is None:
                session.add(BucketRow(name=bucket, account_id=account, created_at=utc_now()))
    except IntegrityError:  # another process recorded the name between our read and our insert
        if owner(db, bucket) != account:
            raise ConflictException(f"BucketAlreadyExists: the bucket name {bucket} is not available") from None
    store.create_bucket(bucket)


def delete(db: Database, store: ObjectStore, account: str, bucket: str) -> None:
    """Delete an empty bucket of `account`; its name is then free for any account."""
    if owner(db, bucket) != account:
        raise BucketNotFound(f"bucket does not exist: s3://{bucket}")
    store.delete_bucket(bucket)
    with db.session() as session:
        row = session.get(BucketRow, bucket)
        if row is not None:
            session.delete(row)


def adopt(db: Database, store: ObjectStore, account: str) -> list[str]:
    """Give every bucket of the store that has no owner to `account` (the first account): the data
    migration for buckets made before owners were recorded. Returns the names adopted."""
    with db.session() as session:
        known = set(session.scalars(select(BucketRow.name)))
    adopted = []
    for bucket in store.list_buckets():
        if bucket in known or bucket in RESERVED_BUCKETS:
            continue
        try:
            with db.session() as session:
                session.add(BucketRow(name=bucket, account_id=account, created_at=utc_now()))
            adopted.append(bucket)
        except IntegrityError:  # adopted (or created) by another process meanwhile
            continue
    return adopted


#: The schema revision that began recording owners; a database upgraded from before it adopts its buckets.
OWNERS_REVISION = "0009"


def adopt_after_upgrade(db: Database, store: ObjectStore, first_account: Callable[[], str]) -> list[str]:
    """Once, in the process that upgraded an existing database past OWNERS_REVISION: give the store's
    buckets to the first account (`adopt`). Never again after: a bucket that later appears on a shared S3
    endpoint belongs to no one until an account claims it with `outcrop s3 mb` (which takes an unowned
    existing bucket). A store that cannot be listed at that moment is logged, and its buckets are claimed
    the same way."""
    if db.upgraded_from is None or db.upgraded_from >= OWNERS_REVISION:
        return []
    try:
        adopted = adopt(db, store, first_account())
    except Exception as exc:  # an S3 endpoint that is down, or no credentials: the server must still start
        log.warning("could not list the object store's buckets to record their owners (%s); claim each with "
                    "`outcrop s3 mb s3://NAME --account ID`", exc)
        return []
    if adopted:
        log.info("buckets %s had no owner; they now belong to the first account", ", ".join(adopted))
    return adopted


def put_policy(db: Database, account: str, bucket: str, document: str | dict[str, Any]) -> None:
    """Attach a bucket policy (its statements must name a Principal, as S3's do)."""
    text = document if isinstance(document, str) else json.dumps(document)
    policy = parse_policy(text, name="bucket policy")
    if any(statement.principal is None for statement in policy.statements):
        raise ValidationException("Every statement of a bucket policy needs a Principal (who it lets in)")
    with db.session() as session:
        row = session.get(BucketRow, bucket)
        if row is None or row.account_id != account:
            raise BucketNotFound(f"bucket does not exist: s3://{bucket}")
        row.policy = text


def get_policy(db: Database, account: str, bucket: str) -> str | None:
    with db.session() as session:
        row = session.get(BucketRow, bucket)
        if row is None or row.account_id != account:
            raise BucketNotFound(f"bucket does not exist: s3://{bucket}")
        return row.policy


def delete_policy(db: Database, account: str, bucket: str) -> None:
    with db.session() as session:
        row = session.get(BucketRow, bucket)
        if row is None or row.account_id != account:
            raise BucketNotFound(f"bucket does not exist: s3://{bucket}")
        row.policy = None


def grantable(db: Database, account: str, bucket: str, prefix: str = "") -> None:
    """Before a role of `account` is given access to `bucket`: the bucket must be the account's, or its
    policy must let the account read there. Access would be denied at use anyway; saying so at grant time
    is kinder. A missing bucket and another account's answer alike, so this is no probe of names."""
    check_access(db, Principal.account_root(account), "s3:GetObject", f"{_S3_ARN}{bucket}/{prefix}")

