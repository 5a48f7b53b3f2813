"""The object store as one principal sees it: every read, write and listing is authorized first.

Jobs (fine-tuning, evaluation) act as their `roleArn`, and `outcrop s3` acts as an account's root; this
wrapper asks IAM before each operation with S3's own action names and ARNs, so a policy means the
same here as on AWS, and a bucket of another account is out of reach (iam/buckets.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, BinaryIO

from outcrop.iam import buckets
from outcrop.iam.principal import Principal
from outcrop.iam.service import IamService
from outcrop.platform.objectstore import ObjectInfo, ObjectStore, S3Uri, UriLike


def object_arn(uri: S3Uri) -> str:
    return f"arn:aws:s3:::{uri.bucket}/{uri.key}"


def bucket_arn(bucket: str) -> str:
    return f"arn:aws:s3:::{bucket}"


class ScopedStore:
    """The ObjectStore operations that jobs and the CLI use, each authorized for `principal`."""

    def __init__(self, store: ObjectStore, iam: IamService, principal: Principal,
                 conditions: dict[str, Any] | None = None) -> None:
        """`conditions`: the request's condition keys (aws:SourceIp, aws:SecureTransport) when a person's request
        reaches the store (the console), so that a policy's conditions hold there as they do on the API."""
        self.store = store
        self.iam = iam
        self.principal = principal
        self.conditions = dict(conditions or {})

    def _authorize(self, action: str, resource: str, extra: dict[str, Any] | None = None) -> None:
        self.iam.authorize(self.principal, action, resource, {**self.conditions, **(extra or {})})

    def _allow(self, action: str, uri: UriLike) -> S3Uri:
        parsed = S3Uri.parse(uri)
        self._authorize(action, object_arn(parsed))
        return parsed

    def _allow_listing(self, uri_prefix: UriLike) -> S3Uri:
        parsed = S3Uri.parse(uri_prefix)
        self._authorize("s3:ListBucket", bucket_arn(parsed.bucket), {"s3:prefix": parsed.key})
        return parsed

    # -- buckets (the account's own) ----------------------------------------------------------------

    def create_bucket(self, bucket: str) -> None:
        self._authorize("s3:CreateBucket", bucket_arn(bucket))
        buckets.create(self.iam.db, self.store, self.principal.account_id, bucket)

    def delete_bucket(self, bucket: str) -> None:
        self._authorize("s3:DeleteBucket", bucket_arn(bucket))
        buckets.delete(self.iam.db, self.store, self.principal.account_id, bucket)

    def list_buckets(self) -> list[str]:
        """The buckets of the principal's account (S3's ListBuckets lists only the caller's own)."""
        self._authorize("s3:ListAllMyBuckets", "*")
        return buckets.owned_buckets(self.iam.db, self.principal.account_id)

    # -- objects ----------------------------------------------------------------------------------

    def head(self, uri: UriLike) -> ObjectInfo:
        return self.store.head(self._allow("s3:GetObject", uri))

    def open_read(self, uri: UriLike) -> BinaryIO:
        return self.store.open_read(self._allow("s3:GetObject", uri))

    def get_bytes(self, uri: UriLike) -> bytes:
        return self.store.get_bytes(self._allow("s3:GetObject", uri))

    def download_file(self, uri: UriLike, local_path: str | os.PathLike[str]) -> None:
        self.store.download_file(self._allow("s3:GetObject", uri), local_path)

    def put_bytes(self, uri: UriLike, data: bytes) -> ObjectInfo:
        return self.store.put_bytes(self._allow("s3:PutObject", uri), data)

    def upload_fileobj(self, fileobj: BinaryIO, uri: UriLike) -> ObjectInfo:
        return self.store.upload_fileobj(fileobj, self._allow("s3:PutObject", uri))

    def upload_file(self, local_path: str | os.PathLike[str], uri: UriLike) -> ObjectInfo:
        return self.store.upload_file(local_path, self._allow("s3:PutObject", uri))

    def copy(self, src: UriLike, dst: UriLike) -> ObjectInfo:
        return self.store.copy(self._allow("s3:GetObject", src), self._allow("s3:PutObject", dst))

    def delete(self, uri: UriLike) -> None:
        self.store.delete(self._allow("s3:DeleteObject", uri))

    def list(self, uri_prefix: UriLike, recursive: bool = True) -> Iterator[ObjectInfo]:
        return self.store.list(self._allow_listing(uri_prefix), recursive)

    def list_prefixes(self, uri_prefix: UriLike) -> Iterator[str]:
        return self.store.list_prefixes(self._allow_listing(uri_prefix))
