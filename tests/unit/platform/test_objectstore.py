"""The object store: the same behaviour from the local folder and from a real S3 API (moto)."""

from __future__ import annotations

import io
import os
from datetime import UTC
from pathlib import Path

import pytest

from outcrop.errors import ConflictException, ResourceNotFoundException, ValidationException
from outcrop.platform.objectstore import (
    TEMP_PREFIX,
    BucketNotEmpty,
    BucketNotFound,
    InvalidObjectKey,
    LocalObjectStore,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    S3Uri,
)
from tests.integration.conftest import fresh_s3_store


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    return fresh_s3_store()


@pytest.fixture
def bucket(store) -> str:
    store.create_bucket("bkt")
    return "bkt"


@pytest.fixture
def local(tmp_path) -> LocalObjectStore:
    store = LocalObjectStore(tmp_path / "objects")
    store.create_bucket("bkt")
    return store


def keys(infos) -> list[str]:
    return [info.key for info in infos]


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


# --- S3Uri -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "bucket", "key"), [
    ("s3://bkt/data/train.jsonl", "bkt", "data/train.jsonl"),
    ("s3://bkt", "bkt", ""),
    ("s3://bkt/", "bkt", ""),
    ("s3://bkt/prefix/", "bkt", "prefix/"),
])
def test_s3uri_parse(text, bucket, key):
    uri = S3Uri.parse(text)
    assert (uri.bucket, uri.key) == (bucket, key)
    assert S3Uri.parse(str(uri)) == uri
    assert S3Uri.parse(uri) is uri


def test_s3uri_str_and_join():
    assert str(S3Uri("bkt", "a/b")) == "s3://bkt/a/b"
    assert str(S3Uri("bkt")) == "s3://bkt/"
    assert S3Uri("bkt").join("a", "b.txt") == S3Uri("bkt", "a/b.txt")
    assert S3Uri("bkt", "out/").join("x") == S3Uri("bkt", "out/x")
    assert S3Uri("bkt", "out").join("/x/", "y/") == S3Uri("bkt", "out/x/y/")


@pytest.mark.parametrize("text", ["http://bkt/key", "bkt/key", "s3://", "s3:///key", "S3://bkt/key",
                                  "s3://Bkt/key", "s3://b/key", "/local/path"])
def test_s3uri_parse_refuses_and_names_the_uri(text):
    with pytest.raises(ValidationException) as err:
        S3Uri.parse(text)
    assert text in err.value.message


@pytest.mark.parametrize("name", ["abc", "my.bucket-1", "a" * 63, "0day"])
def test_valid_bucket_names(name):
    assert S3Uri(name).bucket == name


@pytest.mark.parametrize("name", ["ab", "a" * 64, "Upper", "-abc", "abc-", ".abc", "a..b", "a_b",
                                  "192.168.1.1", "a/b", ""])
def test_invalid_bucket_names(name):
    with pytest.raises(ValidationException):
        S3Uri(name)


def test_object_info_uri():
    info = ObjectInfo("bkt", "a/b", 1, None)  # type: ignore[arg-type]
    assert info.uri == S3Uri("bkt", "a/b")


# --- behaviour shared by both backends ----------------------------------------------------------------


def test_round_trip(store, bucket, tmp_path):
    info = store.put_bytes("s3://bkt/data/train.jsonl", b'{"a": 1}\n')
    assert (info.bucket, info.key, info.size) == ("bkt", "data/train.jsonl", 9)
    assert info.last_modified.tzinfo is not None and info.last_modified.utcoffset().total_seconds() == 0
    assert info.uri == S3Uri("bkt", "data/train.jsonl")
    assert store.get_bytes(S3Uri("bkt", "data/train.jsonl")) == b'{"a": 1}\n'
    assert store.head("s3://bkt/data/train.jsonl").size == 9
    assert store.exists("s3://bkt/data/train.jsonl")

    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 7))  # several copy chunks
    assert store.upload_file(src, "s3://bkt/big.bin").size == src.stat().st_size
    dst = tmp_path / "out" / "deeper" / "big.bin"
    store.download_file("s3://bkt/big.bin", dst)
    assert dst.read_bytes() == src.read_bytes()

    assert store.copy("s3://bkt/big.bin", "s3://bkt/copy.bin").size == src.stat().st_size
    assert store.get_bytes("s3://bkt/copy.bin") == src.read_bytes()

    store.put_bytes("s3://bkt/data/train.jsonl", b"replaced")
    assert store.get_bytes("s3://bkt/data/train.jsonl") == b"replaced"


def test_a_large_file_goes_up_in_parts_and_comes_back_whole(store, bucket, tmp_path):
    """20 MiB: above boto3's 8 MiB multipart threshold, so on S3 an upload of three parts (its ETag says how
    many), and a server-side copy in parts too."""
    src = tmp_path / "large.bin"
    src.write_bytes(os.urandom(20 * 1024 * 1024 + 3))
    assert store.upload_file(src, "s3://bkt/large.bin").size == src.stat().st_size
    assert store.copy("s3://bkt/large.bin", "s3://bkt/large-copy.bin").size == src.stat().st_size
    for key in ("large.bin", "large-copy.bin"):
        store.download_file(f"s3://bkt/{key}", tmp_path / key)
        assert (tmp_path / key).read_bytes() == src.read_bytes()
    if not isinstance(store, LocalObjectStore):
        etag = store._client.head_object(Bucket="bkt", Key="large.bin")["ETag"]
        assert etag.strip('"').endswith("-3")


def test_more_than_a_thousand_keys_list_and_delete(store, bucket):
    """S3 answers at most 1,000 keys a page and deletes at most 1,000 a request: both are paged."""
    from concurrent.futures import ThreadPoolExecutor

    names = [f"many/{i:05d}.txt" for i in range(1_050)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda name: store.put_bytes(f"s3://bkt/{name}", b"x"), names))
    store.put_bytes("s3://bkt/other.txt", b"y")
    assert keys(store.list("s3://bkt/many/")) == names
    assert store.delete_prefix("s3://bkt/many/") == 1_050
    assert keys(store.list("s3://bkt/")) == ["other.txt"]


def test_upload_fileobj_streams_an_unsized_source(store, bucket):
    class Pipe(io.RawIOBase):  # like stdin: no seek, no size
        def __init__(self):
            self.chunks = [b"line %d\n" % i for i in range(1000)]

        def readable(self):
            return True

        def readinto(self, buf):
            if not self.chunks:
                return 0
            chunk = self.chunks.pop(0)
            buf[:len(chunk)] = chunk
            return len(chunk)

    info = store.upload_fileobj(io.BufferedReader(Pipe()), "s3://bkt/piped.txt")
    assert store.get_bytes("s3://bkt/piped.txt") == b"".join(b"line %d\n" % i for i in range(1000))
    assert info.size == len(store.get_bytes("s3://bkt/piped.txt"))


def test_open_read_streams_lines_and_closes(store, bucket):
    lines = [f'{{"n": {i}}}\n' for i in range(5000)]
    store.put_bytes("s3://bkt/in.jsonl", "".join(lines).encode())
    with store.open_read("s3://bkt/in.jsonl") as fh:
        assert list(io.TextIOWrapper(fh, encoding="utf-8")) == lines
    assert fh.closed
    with store.open_read("s3://bkt/in.jsonl") as fh:
        assert fh.readline() == lines[0].encode()
        assert next(iter(fh)) == lines[1].encode()


def test_buckets(store):
    assert store.list_buckets() == []
    assert not store.bucket_exists("bkt")
    store.create_bucket("bkt")
    store.create_bucket("bkt")  # idempotent
    store.create_bucket("another.bucket")
    assert store.list_buckets() == ["another.bucket", "bkt"]
    assert store.bucket_exists("bkt")

    store.put_bytes("s3://bkt/a/b", b"x")
    with pytest.raises(BucketNotEmpty) as err:
        store.delete_bucket("bkt")
    assert "s3://bkt" in err.value.message
    assert isinstance(err.value, ConflictException)
    store.delete("s3://bkt/a/b")
    store.delete_bucket("bkt")
    assert store.list_buckets() == ["another.bucket"]
    with pytest.raises(BucketNotFound):
        store.delete_bucket("bkt")
    with pytest.raises(ValidationException):
        store.create_bucket("Not_A_Bucket")


@pytest.mark.parametrize("operation", [
    lambda s: s.put_bytes("s3://nobucket/k", b"x"),
    lambda s: s.get_bytes("s3://nobucket/k"),
    lambda s: s.head("s3://nobucket/k"),
    lambda s: s.open_read("s3://nobucket/k"),
    lambda s: s.delete("s3://nobucket/k"),
    lambda s: list(s.list("s3://nobucket/")),
    lambda s: list(s.list_prefixes("s3://nobucket/")),
], ids=["put", "get", "head", "open_read", "delete", "list", "list_prefixes"])
def test_missing_bucket_is_bucket_not_found(store, operation):
    with pytest.raises(BucketNotFound) as err:
        operation(store)
    assert "s3://nobucket" in err.value.message
    assert isinstance(err.value, ResourceNotFoundException)


def test_missing_key(store, bucket, tmp_path):
    for operation in (store.head, store.get_bytes, store.open_read):
        with pytest.raises(ObjectNotFound) as err:
            operation("s3://bkt/missing.txt")
        assert "s3://bkt/missing.txt" in err.value.message
    with pytest.raises(ObjectNotFound):
        store.copy("s3://bkt/missing.txt", "s3://bkt/other.txt")
    with pytest.raises(ObjectNotFound):
        store.download_file("s3://bkt/missing.txt", tmp_path / "never")
    assert not (tmp_path / "never").exists()
    assert not store.exists("s3://bkt/missing.txt")
    store.delete("s3://bkt/missing.txt")  # not an error, as in S3


LAYOUT = ["b", "a/c/d", "ab", "a.txt", "a/b", "a/c/e/f", "z/y"]


def test_list_is_sorted_and_prefix_filtered(store, bucket):
    for key in LAYOUT:
        store.put_bytes(f"s3://bkt/{key}", key.encode())
    assert keys(store.list("s3://bkt")) == ["a.txt", "a/b", "a/c/d", "a/c/e/f", "ab", "b", "z/y"]
    assert keys(store.list("s3://bkt/a/")) == ["a/b", "a/c/d", "a/c/e/f"]
    assert keys(store.list("s3://bkt/a")) == ["a.txt", "a/b", "a/c/d", "a/c/e/f", "ab"]  # a string prefix
    assert keys(store.list("s3://bkt/a/c/e")) == ["a/c/e/f"]
    assert keys(store.list("s3://bkt/nothing/")) == []
    assert [info.size for info in store.list("s3://bkt/a/c/")] == [5, 7]


def test_list_non_recursive_and_prefixes(store, bucket):
    for key in LAYOUT:
        store.put_bytes(f"s3://bkt/{key}", key.encode())
    assert keys(store.list("s3://bkt", recursive=False)) == ["a.txt", "ab", "b"]
    assert list(store.list_prefixes("s3://bkt")) == ["a/", "z/"]
    assert keys(store.list("s3://bkt/a/", recursive=False)) == ["a/b"]
    assert list(store.list_prefixes("s3://bkt/a/")) == ["a/c/"]
    assert list(store.list_prefixes("s3://bkt/a/c/")) == ["a/c/e/"]
    assert list(store.list_prefixes("s3://bkt/a")) == ["a/"]


def test_delete_and_delete_prefix(store, bucket):
    for key in LAYOUT:
        store.put_bytes(f"s3://bkt/{key}", b"x")
    store.delete("s3://bkt/a/c/e/f")
    assert list(store.list_prefixes("s3://bkt/a/c/")) == []  # the emptied folder is no prefix any more
    assert store.delete_prefix("s3://bkt/a/") == 2
    assert keys(store.list("s3://bkt")) == ["a.txt", "ab", "b", "z/y"]
    assert store.delete_prefix("s3://bkt/none/") == 0
    assert store.delete_prefix("s3://bkt") == 4
    assert keys(store.list("s3://bkt")) == []
    store.delete_bucket("bkt")


BAD_KEYS = ["../x", "a/../../x", "a/..", "./x", "a/./b", "/abs", "a//b", "a/", "a\\b", "a\0b", "",
            f"{TEMP_PREFIX}abc", f"a/{TEMP_PREFIX}abc/b",
            "/".join(["k" * 204] * 5) + "k",  # 1025 bytes, every segment short enough
            "/".join(["é" * 110] * 5),  # 1104 bytes of UTF-8 in 554 characters
            "x" * 256, "x" * 256 + "/y"]  # a segment longer than a file name may be


@pytest.mark.parametrize("key", BAD_KEYS, ids=[repr(k) if len(k) < 30 else f"{len(k.encode())}B"
                                               for k in BAD_KEYS])
def test_bad_keys_are_refused_alike(store, bucket, key):
    uri = S3Uri("bkt", key)
    for operation in (lambda: store.put_bytes(uri, b"x"), lambda: store.head(uri),
                      lambda: store.get_bytes(uri), lambda: store.delete(uri)):
        with pytest.raises(InvalidObjectKey) as err:
            operation()
        assert "s3://bkt/" in err.value.message
    assert keys(store.list("s3://bkt")) == []


def test_key_of_exactly_1024_bytes_is_fine(store, bucket):
    key = "/".join(["k" * 204] * 5)
    assert len(key.encode()) == 1024
    store.put_bytes(S3Uri("bkt", key), b"x")
    assert keys(store.list("s3://bkt")) == [key]


@pytest.mark.parametrize("prefix", ["s3://bkt/../", "s3://bkt/a//", "s3://bkt//x", "s3://bkt/a\\b"])
def test_bad_prefixes_are_refused(store, bucket, prefix):
    with pytest.raises(InvalidObjectKey):
        list(store.list(prefix))


# --- the local folder -----------------------------------------------------------------------------------


def test_local_layout_and_no_temp_files(local, tmp_path):
    local.put_bytes("s3://bkt/a/b.txt", b"hello")
    local.put_bytes("s3://bkt/a/b.txt", b"hello again")
    local.upload_file(__file__, "s3://bkt/c.py")
    root = tmp_path / "objects"
    assert files_under(root) == ["bkt/a/b.txt", "bkt/c.py"]
    assert (root / "bkt" / "a" / "b.txt").read_bytes() == b"hello again"


def test_failed_write_keeps_the_old_object_and_no_temp_file(local, tmp_path):
    local.put_bytes("s3://bkt/k", b"old")

    class Broken(io.RawIOBase):
        calls = 0

        def readable(self):
            return True

        def readinto(self, buf):
            self.calls += 1
            if self.calls > 1:
                raise OSError("the source went away")
            buf[:3] = b"new"
            return 3

    with pytest.raises(OSError, match="went away"):
        local.upload_fileobj(Broken(), "s3://bkt/k")
    assert local.get_bytes("s3://bkt/k") == b"old"
    assert files_under(tmp_path / "objects") == ["bkt/k"]


def test_temp_files_never_list(local, tmp_path):
    (tmp_path / "objects" / "bkt" / "d").mkdir()
    (tmp_path / "objects" / "bkt" / "d" / f"{TEMP_PREFIX}1234").write_bytes(b"half")
    (tmp_path / "objects" / "bkt" / "empty").mkdir()  # a folder with no object is not a prefix
    local.put_bytes("s3://bkt/real", b"x")
    assert keys(local.list("s3://bkt")) == ["real"]
    assert list(local.list_prefixes("s3://bkt")) == []
    local.delete("s3://bkt/real")
    local.delete_bucket("bkt")  # only leftovers remained, so the bucket counts as empty
    assert not (tmp_path / "objects" / "bkt").exists()


def test_delete_prunes_empty_folders(local, tmp_path):
    local.put_bytes("s3://bkt/a/b/c/d.txt", b"x")
    local.put_bytes("s3://bkt/a/keep.txt", b"x")
    local.delete("s3://bkt/a/b/c/d.txt")
    assert not (tmp_path / "objects" / "bkt" / "a" / "b").exists()
    assert (tmp_path / "objects" / "bkt" / "a" / "keep.txt").exists()
    local.delete("s3://bkt/a/keep.txt")
    assert list((tmp_path / "objects" / "bkt").iterdir()) == []
    assert (tmp_path / "objects" / "bkt").is_dir()  # the bucket itself stays


def test_folders_are_not_objects(local, tmp_path):
    local.put_bytes("s3://bkt/dir/file", b"x")
    with pytest.raises(ObjectNotFound):
        local.head("s3://bkt/dir")
    with pytest.raises(ObjectNotFound):
        local.get_bytes("s3://bkt/dir")
    local.delete("s3://bkt/dir")  # a folder is no object, so there is nothing to delete
    assert local.exists("s3://bkt/dir/file")
    with pytest.raises(ObjectNotFound):
        local.head("s3://bkt/dir/file/deeper")


def test_object_and_folder_of_the_same_name_conflict(local):
    local.put_bytes("s3://bkt/a", b"x")
    with pytest.raises(ConflictException):
        local.put_bytes("s3://bkt/a/b", b"y")
    local.put_bytes("s3://bkt/c/d", b"y")
    with pytest.raises(ConflictException):
        local.put_bytes("s3://bkt/c", b"x")


def test_symlinks_cannot_escape_the_bucket(local, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    bucket_dir = tmp_path / "objects" / "bkt"
    (bucket_dir / "linkdir").symlink_to(outside)
    (bucket_dir / "linkfile").symlink_to(outside / "secret")
    (tmp_path / "objects" / "other").mkdir()  # a sibling bucket is outside too
    (bucket_dir / "sibling").symlink_to(tmp_path / "objects" / "other")

    for key in ("linkdir/secret", "linkfile", "sibling/x"):
        for operation in (lambda k=key: local.get_bytes(f"s3://bkt/{k}"),
                          lambda k=key: local.put_bytes(f"s3://bkt/{k}", b"overwritten"),
                          lambda k=key: local.delete(f"s3://bkt/{k}")):
            with pytest.raises(InvalidObjectKey):
                operation()
    with pytest.raises(InvalidObjectKey):
        list(local.list("s3://bkt/linkdir/"))
    assert (outside / "secret").read_bytes() == b"secret"
    assert keys(local.list("s3://bkt")) == []  # symlinks are not objects
    assert list(local.list_prefixes("s3://bkt")) == []


def test_download_replaces_atomically(local, tmp_path):
    local.put_bytes("s3://bkt/k", b"new contents")
    dst = tmp_path / "dst.txt"
    dst.write_bytes(b"old")
    local.download_file("s3://bkt/k", dst)
    assert dst.read_bytes() == b"new contents"
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["dst.txt"]


def test_last_modified_is_utc(local):
    assert local.put_bytes("s3://bkt/k", b"x").last_modified.tzinfo is UTC
