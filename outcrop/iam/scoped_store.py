"""The object store as a service role sees it: every read, write and listing is authorized first.

Jobs (fine-tuning, evaluation) act as their `roleArn`; this wrapper asks IAM before each operation
with S3's own action names and ARNs, so a role's policy means the same here as on AWS.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from outcrop.iam.principal import Principal
from outcrop.iam.service import IamService
from outcrop.platform.objectstore import ObjectInfo, ObjectStore, S3Uri, UriLike


def object_arn(uri: S3Uri) -> str:
    return f"arn:aws:s3:::{uri.bucket}/{uri.key}"


def bucket_arn(bucket: str) -> str:
    return f"arn:aws:s3:::{bucket}"


class RoleScopedStore:
    """The read/write/list subset of ObjectStore that jobs use, each call authorized for `role`."""

    def __init__(self, store: ObjectStore, iam: IamService, role: Principal) -> None:
        self.store = store
        self.iam = iam
        self.role = role

    def _allow(self, action: str, uri: UriLike) -> S3Uri:
        parsed = S3Uri.parse(uri)
        self.iam.authorize(self.role, action, object_arn(parsed))
        return parsed

    def head(self, uri: UriLike) -> ObjectInfo:
        return self.store.head(self._allow("s3:GetObject", uri))

    def open_read(self, uri: UriLike) -> BinaryIO:
        return self.store.open_read(self._allow("s3:GetObject", uri))

    def get_bytes(self, uri: UriLike) -> bytes:
        return self.store.get_bytes(self._allow("s3:GetObject", uri))

    def put_bytes(self, uri: UriLike, data: bytes) -> ObjectInfo:
        return self.store.put_bytes(self._allow("s3:PutObject", uri), data)

    def list(self, uri_prefix: UriLike, recursive: bool = True) -> Iterator[ObjectInfo]:
        parsed = S3Uri.parse(uri_prefix)
        self.iam.authorize(self.role, "s3:ListBucket", bucket_arn(parsed.bucket), {"s3:prefix": parsed.key})
        return self.store.list(parsed, recursive)
