"""Where training data, batch inputs and job outputs live: a folder on this host, or any S3 API.

Callers name objects by `s3://bucket/key` on either backend, so a job spec written against the
embedded folder runs unchanged against MinIO or AWS. Both backends enforce the same key rules and
raise the same errors; the interface is only worth having if switching backends changes nothing.

Listing follows S3's ListObjectsV2: a prefix is a plain string prefix (`data/tr` matches
`data/train.jsonl`), results come sorted by key. With `recursive=False`, `list` yields only the
objects directly at that level and `list_prefixes` yields the "folders" one level down, the
two halves of a delimited listing, kept apart so `list` always yields one type.
"""

from __future__ import annotations

import abc
import io
import ipaddress
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from botocore.exceptions import ClientError, EndpointConnectionError

from outcrop.errors import (
    AccessDeniedException,
    ConflictException,
    ResourceNotFoundException,
    ServiceUnavailableException,
    ValidationException,
)

if TYPE_CHECKING:
    from outcrop.platform.config import Settings

#: Names of in-flight temp files; keys may not use it, so a temp file can never pass for an object.
TEMP_PREFIX = ".outcrop-tmp."
MAX_KEY_BYTES = 1024
#: Most filesystems cap one path component here; enforced on S3 too so objects stay portable.
MAX_SEGMENT_BYTES = 255
_CHUNK = 1 << 20
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class ObjectNotFound(ResourceNotFoundException):
    pass


class BucketNotFound(ResourceNotFoundException):
    pass


class BucketNotEmpty(ConflictException):
    pass


class InvalidObjectKey(ValidationException):
    pass


def _valid_bucket(name: str) -> bool:
    return bool(_BUCKET_RE.fullmatch(name)) and ".." not in name and not _is_ip(name)


def _check_bucket(bucket: str) -> None:
    if not _valid_bucket(bucket):
        raise ValidationException(
            f"invalid bucket name {bucket!r}: use 3-63 lowercase letters, digits, dots and hyphens, "
            "starting and ending with a letter or digit")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    key: str = ""

    def __post_init__(self) -> None:
        _check_bucket(self.bucket)

    @classmethod
    def parse(cls, uri: str | S3Uri) -> S3Uri:
        if isinstance(uri, S3Uri):
            return uri
        if not isinstance(uri, str) or not uri.startswith("s3://"):
            raise ValidationException(f"not an S3 URI (expected s3://bucket/key): {uri!r}")
        bucket, _, key = uri[len("s3://"):].partition("/")
        try:
            return cls(bucket, key)
        except ValidationException as exc:
            raise ValidationException(f"not a valid S3 URI {uri!r}: {exc.message}") from None

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def join(self, *parts: str) -> S3Uri:
        """Append path parts with exactly one `/` between them, as `posixpath.join` would."""
        key = self.key
        for part in parts:
            key = f"{key.rstrip('/')}/{part.lstrip('/')}" if key else part.lstrip("/")
        return S3Uri(self.bucket, key)


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    key: str
    size: int
    last_modified: datetime

    @property
    def uri(self) -> S3Uri:
        return S3Uri(self.bucket, self.key)


UriLike = str | S3Uri


def _segment_error(segment: str) -> str | None:
    if segment in ("", ".", ".."):
        return "empty, '.' and '..' path segments are not allowed"
    if segment.startswith(TEMP_PREFIX):
        return f"segments starting with {TEMP_PREFIX!r} are reserved"
    try:
        encoded = segment.encode("utf-8")
    except UnicodeEncodeError:
        return "a path segment is not valid Unicode"
    if len(encoded) > MAX_SEGMENT_BYTES:
        return f"a path segment is longer than {MAX_SEGMENT_BYTES} bytes"
    return None


def _key_error(key: str, *, prefix: bool) -> str | None:
    """Why `key` cannot name an object (or, with `prefix`, start a listing); None if it can."""
    if "\\" in key or "\0" in key:
        return "backslashes and NUL bytes are not allowed"
    try:
        if len(key.encode("utf-8")) > MAX_KEY_BYTES:
            return f"keys are at most {MAX_KEY_BYTES} bytes of UTF-8"
    except UnicodeEncodeError:
        return "keys must be valid UTF-8"
    if not key and not prefix:
        return "the key is empty"
    # A prefix may end with `/` or with a partial name; only its complete segments must be valid.
    segments = key.split("/")[:-1] if prefix else key.split("/")
    for segment in segments:
        if why := _segment_error(segment):
            return why
    return None


def _object_uri(uri: UriLike) -> S3Uri:
    """Parse `uri` and insist that it names one object, under the rules both backends share."""
    parsed = S3Uri.parse(uri)
    if why := _key_error(parsed.key, prefix=False):
        raise InvalidObjectKey(f"invalid object key in {parsed}: {why}")
    return parsed


def _prefix_uri(uri: UriLike) -> S3Uri:
    parsed = S3Uri.parse(uri)
    if why := _key_error(parsed.key, prefix=True):
        raise InvalidObjectKey(f"invalid key prefix in {parsed}: {why}")
    return parsed


def _atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through a temp file beside `path`, so readers see the old file or the whole new one."""
    for attempt in range(3):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        try:
            # os.open with 0o666 honours the umask, unlike mkstemp's 0o600: Outcrop's processes set 0o077
            # (outcrop.platform.private), so objects in the data dir are 0600; a library user keeps its own.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileNotFoundError:  # a concurrent delete pruned the empty parent; make it again
            if attempt == 2:
                raise
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class ObjectStore(abc.ABC):
    """Buckets of objects addressed by `s3://bucket/key`; see the module docstring for listing."""

    @abc.abstractmethod
    def create_bucket(self, bucket: str) -> None:
        """Create `bucket`; creating one that exists already is not an error."""

    @abc.abstractmethod
    def delete_bucket(self, bucket: str) -> None:
        """Delete an empty bucket; BucketNotEmpty if it holds objects, BucketNotFound if absent."""

    @abc.abstractmethod
    def list_buckets(self) -> list[str]: ...

    @abc.abstractmethod
    def bucket_exists(self, bucket: str) -> bool: ...

    @abc.abstractmethod
    def upload_fileobj(self, fileobj: BinaryIO, uri: UriLike) -> ObjectInfo:
        """Store everything `fileobj` yields; it is streamed, so it may be stdin or a pipe."""

    @abc.abstractmethod
    def open_read(self, uri: UriLike) -> BinaryIO:
        """A buffered binary stream of the object; wrap it in `io.TextIOWrapper` to read lines."""

    @abc.abstractmethod
    def head(self, uri: UriLike) -> ObjectInfo: ...

    @abc.abstractmethod
    def list(self, uri_prefix: UriLike, recursive: bool = True) -> Iterator[ObjectInfo]:
        """Objects whose key starts with the prefix, by key; `recursive=False` stops at the next `/`."""

    @abc.abstractmethod
    def list_prefixes(self, uri_prefix: UriLike) -> Iterator[str]:
        """Keys ending in `/` one level below the prefix that hold objects: S3's CommonPrefixes."""

    @abc.abstractmethod
    def delete(self, uri: UriLike) -> None:
        """Delete one object; a missing key is not an error, as in S3."""

    def put_bytes(self, uri: UriLike, data: bytes) -> ObjectInfo:
        return self.upload_fileobj(io.BytesIO(data), uri)

    def get_bytes(self, uri: UriLike) -> bytes:
        with self.open_read(uri) as fh:
            return fh.read()

    def upload_file(self, local_path: str | os.PathLike[str], uri: UriLike) -> ObjectInfo:
        with open(local_path, "rb") as fh:
            return self.upload_fileobj(fh, uri)

    def download_file(self, uri: UriLike, local_path: str | os.PathLike[str]) -> None:
        """Copy to a local file that appears only once complete; parent folders are created."""
        with self.open_read(uri) as src:
            _atomic_write(Path(local_path), lambda dst: shutil.copyfileobj(src, dst, _CHUNK))

    def copy(self, src: UriLike, dst: UriLike) -> ObjectInfo:
        with self.open_read(src) as fh:
            return self.upload_fileobj(fh, dst)

    def exists(self, uri: UriLike) -> bool:
        try:
            self.head(uri)
        except ObjectNotFound:
            return False
        return True

    def delete_prefix(self, uri_prefix: UriLike) -> int:
        """Delete every object under a string prefix (`""` empties the bucket); returns how many."""
        doomed = [info.uri for info in self.list(uri_prefix)]
        for uri in doomed:
            self.delete(uri)
        return len(doomed)


class LocalObjectStore(ObjectStore):
    """`s3://bucket/key` is the file `root/bucket/key`; for one host, with nothing else to run.

    Unlike S3, a folder cannot hold both the object `a` and objects under `a/`; writing the second
    raises ConflictException.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _bucket_dir(self, bucket: str) -> Path:
        _check_bucket(bucket)
        return self.root / bucket

    def _path(self, uri: S3Uri, rel: str) -> Path:
        """The file for `rel` inside the bucket, refused if symlinks would take it outside."""
        bucket_dir = self._bucket_dir(uri.bucket)
        path = bucket_dir / rel if rel else bucket_dir
        if not path.resolve().is_relative_to(bucket_dir.resolve()):
            raise InvalidObjectKey(f"invalid object key in {uri}: it leads outside the bucket")
        return path

    def _require_bucket(self, uri: S3Uri) -> None:
        if not self._bucket_dir(uri.bucket).is_dir():
            raise BucketNotFound(f"bucket does not exist: s3://{uri.bucket}")

    def _missing(self, uri: S3Uri) -> ObjectNotFound:
        self._require_bucket(uri)
        return ObjectNotFound(f"no such object: {uri}")

    def create_bucket(self, bucket: str) -> None:
        self._bucket_dir(bucket).mkdir(parents=True, exist_ok=True)

    def delete_bucket(self, bucket: str) -> None:
        bucket_dir = self._bucket_dir(bucket)
        if not bucket_dir.is_dir():
            raise BucketNotFound(f"bucket does not exist: s3://{bucket}")
        if next(self._walk(bucket_dir, "", "", recursive=True), None) is not None:
            raise BucketNotEmpty(f"bucket is not empty: s3://{bucket}")
        shutil.rmtree(bucket_dir)  # only empty folders and abandoned temp files are left

    def list_buckets(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(e.name for e in os.scandir(self.root) if e.is_dir() and _valid_bucket(e.name))

    def bucket_exists(self, bucket: str) -> bool:
        return self._bucket_dir(bucket).is_dir()

    def upload_fileobj(self, fileobj: BinaryIO, uri: UriLike) -> ObjectInfo:
        parsed = _object_uri(uri)
        path = self._path(parsed, parsed.key)
        self._require_bucket(parsed)
        try:
            _atomic_write(path, lambda dst: shutil.copyfileobj(fileobj, dst, _CHUNK))
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            raise ConflictException(
                f"cannot write {parsed}: the local object store cannot hold both an object and "
                "other objects under it as a folder") from None
        return self.head(parsed)

    def open_read(self, uri: UriLike) -> BinaryIO:
        parsed = _object_uri(uri)
        try:
            return open(self._path(parsed, parsed.key), "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise self._missing(parsed) from None

    def head(self, uri: UriLike) -> ObjectInfo:
        parsed = _object_uri(uri)
        try:
            st = self._path(parsed, parsed.key).stat()
        except (FileNotFoundError, NotADirectoryError):
            raise self._missing(parsed) from None
        if not stat.S_ISREG(st.st_mode):  # a folder is not an object
            raise self._missing(parsed)
        return ObjectInfo(parsed.bucket, parsed.key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def _walk(self, directory: Path, dir_key: str, name_prefix: str,
              recursive: bool) -> Iterator[tuple[str, os.DirEntry[str]]]:
        """(key, entry) under `directory` in S3 key order; folders come as `key/` when not recursive.

        Sorting a folder's name as `name/` puts all of its keys exactly where S3 would sort them
        among its siblings, so the listing streams without collecting every key first.
        """
        try:
            with os.scandir(directory) as it:
                entries = [e for e in it
                           if e.name.startswith(name_prefix) and not _key_error(e.name, prefix=False)]
        except (FileNotFoundError, NotADirectoryError):
            return
        folders = {e.name for e in entries if e.is_dir(follow_symlinks=False)}
        entries.sort(key=lambda e: e.name + "/" if e.name in folders else e.name)
        for entry in entries:
            key = dir_key + entry.name
            if entry.name in folders:
                if recursive:
                    yield from self._walk(Path(entry.path), key + "/", "", recursive=True)
                elif next(self._walk(Path(entry.path), "", "", recursive=True), None) is not None:
                    yield key + "/", entry
            elif entry.is_file(follow_symlinks=False):
                yield key, entry

    def _listing(self, uri_prefix: UriLike, recursive: bool) -> Iterator[tuple[str, os.DirEntry[str]]]:
        parsed = _prefix_uri(uri_prefix)
        self._require_bucket(parsed)
        dir_key, _, name_prefix = parsed.key.rpartition("/")
        directory = self._path(parsed, dir_key)
        yield from self._walk(directory, dir_key + "/" if dir_key else "", name_prefix, recursive)

    def list(self, uri_prefix: UriLike, recursive: bool = True) -> Iterator[ObjectInfo]:
        bucket = S3Uri.parse(uri_prefix).bucket
        for key, entry in self._listing(uri_prefix, recursive):
            if key.endswith("/"):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # deleted since the folder was read
                continue
            yield ObjectInfo(bucket, key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def list_prefixes(self, uri_prefix: UriLike) -> Iterator[str]:
        return (key for key, _ in self._listing(uri_prefix, recursive=False) if key.endswith("/"))

    def delete(self, uri: UriLike) -> None:
        parsed = _object_uri(uri)
        path = self._path(parsed, parsed.key)
        self._require_bucket(parsed)
        try:
            path.unlink()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return
        # Prune folders the delete left empty, so they neither list as prefixes nor pile up.
        bucket_dir = self._bucket_dir(parsed.bucket)
        for parent in path.parents:
            if parent == bucket_dir:
                break
            try:
                parent.rmdir()
            except OSError:  # not empty (or already gone): the folders above are needed too
                break


class _BodyReader(io.RawIOBase):
    """botocore's StreamingBody as a raw stream, so io.BufferedReader gives it normal file behaviour.

    The body on its own iterates in 1 KiB chunks rather than lines and never reports `closed`.
    """

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._body.readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class S3ObjectStore(ObjectStore):
    """Any S3 API (AWS, MinIO, Ceph); path-style addressing so endpoints on loopback work."""

    def __init__(self, endpoint_url: str, access_key_id: str, secret_access_key: str,
                 region: str = "us-east-1") -> None:
        import boto3
        from botocore.config import Config

        self.endpoint_url = endpoint_url
        self.region = region
        # Empty credentials fall back to boto3's own chain (environment, instance role).
        self._client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url or None, region_name=region,
            aws_access_key_id=access_key_id or None, aws_secret_access_key=secret_access_key or None,
            config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard"}))

    @contextmanager
    def _errors(self, uri: S3Uri | None) -> Iterator[None]:
        """Turn botocore's errors into the ones LocalObjectStore raises for the same mistake."""
        try:
            yield
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "NoSuchBucket":
                raise BucketNotFound(f"bucket does not exist: s3://{uri.bucket}") from None
            if code in ("NoSuchKey", "404", "NotFound"):
                # HEAD answers a bare 404 for a missing bucket too; only a second request tells them apart.
                if not self.bucket_exists(uri.bucket):
                    raise BucketNotFound(f"bucket does not exist: s3://{uri.bucket}") from None
                raise ObjectNotFound(f"no such object: {uri}") from None
            if code == "BucketNotEmpty":
                raise BucketNotEmpty(f"bucket is not empty: s3://{uri.bucket}") from None
            if code == "BucketAlreadyExists":
                raise ConflictException(f"bucket name is taken by another account: {uri}") from None
            if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise AccessDeniedException(
                    f"access denied to {uri or 'the bucket list'} by {self.endpoint_url}: {code}") from None
            raise
        except EndpointConnectionError:
            raise ServiceUnavailableException(f"cannot reach the S3 endpoint {self.endpoint_url}") from None

    def create_bucket(self, bucket: str) -> None:
        uri = S3Uri(bucket)
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if self.region != "us-east-1":  # the one region S3 refuses a LocationConstraint for
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            with self._errors(uri):
                self._client.create_bucket(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                raise

    def delete_bucket(self, bucket: str) -> None:
        with self._errors(S3Uri(bucket)):
            self._client.delete_bucket(Bucket=bucket)

    def list_buckets(self) -> list[str]:
        with self._errors(None):
            return sorted(b["Name"] for b in self._client.list_buckets().get("Buckets", []))

    def bucket_exists(self, bucket: str) -> bool:
        _check_bucket(bucket)
        try:
            self._client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
                return False
            raise
        return True

    def upload_fileobj(self, fileobj: BinaryIO, uri: UriLike) -> ObjectInfo:
        parsed = _object_uri(uri)
        with self._errors(parsed):
            self._client.upload_fileobj(fileobj, parsed.bucket, parsed.key)
        return self.head(parsed)

    def open_read(self, uri: UriLike) -> BinaryIO:
        parsed = _object_uri(uri)
        with self._errors(parsed):
            body = self._client.get_object(Bucket=parsed.bucket, Key=parsed.key)["Body"]
        return io.BufferedReader(_BodyReader(body), _CHUNK)

    def head(self, uri: UriLike) -> ObjectInfo:
        parsed = _object_uri(uri)
        with self._errors(parsed):
            meta = self._client.head_object(Bucket=parsed.bucket, Key=parsed.key)
        return ObjectInfo(parsed.bucket, parsed.key, meta["ContentLength"],
                          meta["LastModified"].astimezone(UTC))

    def copy(self, src: UriLike, dst: UriLike) -> ObjectInfo:
        """Server-side copy (multipart above 8 MiB), so the bytes never pass through this host."""
        src_uri, dst_uri = _object_uri(src), _object_uri(dst)
        self.head(src_uri)  # the source's errors, named after the source
        with self._errors(dst_uri):
            self._client.copy({"Bucket": src_uri.bucket, "Key": src_uri.key}, dst_uri.bucket, dst_uri.key)
        return self.head(dst_uri)

    def _pages(self, uri_prefix: UriLike, recursive: bool) -> Iterator[dict[str, Any]]:
        parsed = _prefix_uri(uri_prefix)
        kwargs: dict[str, Any] = {"Bucket": parsed.bucket, "Prefix": parsed.key}
        if not recursive:
            kwargs["Delimiter"] = "/"
        with self._errors(parsed):
            yield from self._client.get_paginator("list_objects_v2").paginate(**kwargs)

    def list(self, uri_prefix: UriLike, recursive: bool = True) -> Iterator[ObjectInfo]:
        bucket = S3Uri.parse(uri_prefix).bucket
        for page in self._pages(uri_prefix, recursive):
            for obj in page.get("Contents", []):
                if not obj["Key"].endswith("/"):  # folder markers made by consoles are not objects
                    yield ObjectInfo(bucket, obj["Key"], obj["Size"], obj["LastModified"].astimezone(UTC))

    def list_prefixes(self, uri_prefix: UriLike) -> Iterator[str]:
        for page in self._pages(uri_prefix, recursive=False):
            for common in page.get("CommonPrefixes", []):
                yield common["Prefix"]

    def delete(self, uri: UriLike) -> None:
        parsed = _object_uri(uri)
        with self._errors(parsed):
            self._client.delete_object(Bucket=parsed.bucket, Key=parsed.key)

    def delete_prefix(self, uri_prefix: UriLike) -> int:
        """One DeleteObjects request per listed page (at most 1000 keys, the API's own limit)."""
        parsed = _prefix_uri(uri_prefix)
        deleted = 0
        for page in self._pages(parsed, recursive=True):
            keys = [obj["Key"] for obj in page.get("Contents", [])]
            if keys:
                with self._errors(parsed):
                    self._client.delete_objects(
                        Bucket=parsed.bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})
                deleted += sum(not key.endswith("/") for key in keys)  # folder markers were never objects
        return deleted


def open_object_store(settings: Settings) -> ObjectStore:
    """The store this deployment is configured for; everything else reaches objects through it."""
    if settings.s3_endpoint:
        return S3ObjectStore(settings.s3_endpoint, settings.s3_access_key_id,
                             settings.s3_secret_access_key, settings.s3_region)
    return LocalObjectStore(settings.objects_dir)
