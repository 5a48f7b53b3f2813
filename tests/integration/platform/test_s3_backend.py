"""The object store as configured (folder or S3 endpoint) and the `outcrop s3` commands on both."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from outcrop.cli import main
from outcrop.platform.config import ENV_PREFIX, Settings, load_settings
from outcrop.platform.objectstore import LocalObjectStore, S3ObjectStore, open_object_store
from tests.integration.conftest import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY

S3_SETTINGS = ("s3_endpoint", "s3_access_key_id", "s3_secret_access_key", "s3_region")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No OUTCROP_* setting from the developer's shell may pick the backend for a test."""
    for name in (*S3_SETTINGS, "data_dir", "config"):
        monkeypatch.delenv(ENV_PREFIX + name.upper(), raising=False)


def s3_settings(data_dir: Path, endpoint: str) -> Settings:
    return load_settings(data_dir=data_dir, s3_endpoint=endpoint, s3_access_key_id=ACCESS_KEY_ID,
                         s3_secret_access_key=SECRET_ACCESS_KEY, s3_region=REGION)


def test_open_object_store_picks_the_backend(tmp_path, moto_endpoint):
    local = open_object_store(load_settings(data_dir=tmp_path))
    assert isinstance(local, LocalObjectStore) and local.root == tmp_path / "objects"
    assert isinstance(open_object_store(s3_settings(tmp_path, moto_endpoint)), S3ObjectStore)


def test_round_trip_through_settings(tmp_path, moto_endpoint):
    store = open_object_store(s3_settings(tmp_path, moto_endpoint))
    store.create_bucket("training-data")
    lines = b"".join(b'{"prompt": "p%d", "completion": "c%d"}\n' % (i, i) for i in range(100))
    store.put_bytes("s3://training-data/jobs/1/train.jsonl", lines)
    store.upload_file(Path(__file__), "s3://training-data/jobs/1/code.py")

    assert store.list_buckets() == ["training-data"]
    assert [info.key for info in store.list("s3://training-data/jobs/")] == ["jobs/1/code.py",
                                                                             "jobs/1/train.jsonl"]
    with store.open_read("s3://training-data/jobs/1/train.jsonl") as fh:
        assert sum(1 for _ in io.TextIOWrapper(fh, encoding="utf-8")) == 100
    store.download_file("s3://training-data/jobs/1/code.py", tmp_path / "code.py")
    assert (tmp_path / "code.py").read_bytes() == Path(__file__).read_bytes()
    assert store.delete_prefix("s3://training-data/jobs/") == 2
    store.delete_bucket("training-data")
    assert store.list_buckets() == []
    assert not (tmp_path / "objects").exists()  # nothing went to the local folder


@pytest.fixture(params=["local", "s3"])
def data_dir(request, tmp_path, monkeypatch) -> str:
    """A data dir for the CLI; for the S3 backend, the endpoint comes the way users set it: OUTCROP_*."""
    if request.param == "s3":
        endpoint = request.getfixturevalue("moto_endpoint")
        values = (endpoint, ACCESS_KEY_ID, SECRET_ACCESS_KEY, REGION)
        for name, value in zip(S3_SETTINGS, values, strict=True):
            monkeypatch.setenv(ENV_PREFIX + name.upper(), value)
    return str(tmp_path / "data")


def s3(capsys, data_dir: str, *args: str) -> tuple[int, str, str]:
    code = main(["s3", *args, "--data-dir", data_dir])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_commands(capsys, data_dir, tmp_path, monkeypatch):
    src = tmp_path / "train.jsonl"
    src.write_text('{"prompt": "hi"}\n')

    assert s3(capsys, data_dir, "mb", "s3://bkt") == (0, "make_bucket: bkt\n", "")
    assert s3(capsys, data_dir, "cp", str(src), "s3://bkt/data/") == (
        0, f"upload: {src} to s3://bkt/data/train.jsonl\n", "")
    assert s3(capsys, data_dir, "cp", str(src), "s3://bkt/top.jsonl")[0] == 0
    assert s3(capsys, data_dir, "cp", "s3://bkt/top.jsonl", "s3://bkt/data/copy.jsonl") == (
        0, "copy: s3://bkt/top.jsonl to s3://bkt/data/copy.jsonl\n", "")

    assert s3(capsys, data_dir, "ls")[1] == "bkt\n"
    code, out, _ = s3(capsys, data_dir, "ls", "s3://bkt")
    lines = out.splitlines()
    assert code == 0 and lines[0] == " " * 27 + "PRE data/"
    assert lines[1].endswith("        17 top.jsonl") and len(lines) == 2
    assert lines[1][:19].replace("-", "").replace(":", "").replace(" ", "").isdigit()
    code, out, _ = s3(capsys, data_dir, "ls", "s3://bkt/data/")
    assert [line[20:] for line in out.splitlines()] == ["        17 copy.jsonl", "        17 train.jsonl"]
    code, out, _ = s3(capsys, data_dir, "ls", "--recursive", "s3://bkt")
    assert [line.split()[-1] for line in out.splitlines()] == ["data/copy.jsonl", "data/train.jsonl",
                                                               "top.jsonl"]
    assert s3(capsys, data_dir, "ls", "s3://bkt/nothing-here")[0] == 1

    dst = tmp_path / "down" / "got.jsonl"
    assert s3(capsys, data_dir, "cp", "s3://bkt/data/train.jsonl", str(dst)) == (
        0, f"download: s3://bkt/data/train.jsonl to {dst}\n", "")
    assert dst.read_text() == src.read_text()
    assert s3(capsys, data_dir, "cp", "s3://bkt/top.jsonl", f"{tmp_path}/")[1].endswith(
        f"to {tmp_path}/top.jsonl\n")

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"from stdin\n")))
    assert s3(capsys, data_dir, "cp", "-", "s3://bkt/piped.txt") == (0, "", "")
    assert s3(capsys, data_dir, "cp", "s3://bkt/piped.txt", "-") == (0, "from stdin\n", "")

    assert s3(capsys, data_dir, "rm", "s3://bkt/piped.txt") == (0, "delete: s3://bkt/piped.txt\n", "")
    assert s3(capsys, data_dir, "rm", "--recursive", "s3://bkt/data") == (
        0, "delete: s3://bkt/data/copy.jsonl\ndelete: s3://bkt/data/train.jsonl\n", "")
    assert s3(capsys, data_dir, "ls", "--recursive", "s3://bkt")[1].split()[-1] == "top.jsonl"

    code, out, err = s3(capsys, data_dir, "rb", "s3://bkt")
    assert code == 1 and err == "outcrop: BucketNotEmpty: bucket is not empty: s3://bkt\n"
    assert s3(capsys, data_dir, "rb", "s3://bkt", "--force") == (
        0, "delete: s3://bkt/top.jsonl\nremove_bucket: bkt\n", "")
    assert s3(capsys, data_dir, "ls") == (0, "", "")


def test_cli_recursive_copy_both_ways(capsys, data_dir, tmp_path):
    tree = tmp_path / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    for rel in ("a.txt", "sub/b.txt", "sub/deeper/c.txt"):
        (tree / rel).write_text(rel)
    s3(capsys, data_dir, "mb", "s3://bkt")
    code, out, _ = s3(capsys, data_dir, "cp", "--recursive", str(tree), "s3://bkt/in")
    assert code == 0 and out.splitlines() == [
        f"upload: {tree}/a.txt to s3://bkt/in/a.txt", f"upload: {tree}/sub/b.txt to s3://bkt/in/sub/b.txt",
        f"upload: {tree}/sub/deeper/c.txt to s3://bkt/in/sub/deeper/c.txt"]
    assert s3(capsys, data_dir, "cp", "--recursive", "s3://bkt/in/", "s3://bkt/copy/")[0] == 0
    assert s3(capsys, data_dir, "cp", "--recursive", "s3://bkt/copy", str(tmp_path / "back"))[0] == 0
    for rel in ("a.txt", "sub/b.txt", "sub/deeper/c.txt"):
        assert (tmp_path / "back" / rel).read_text() == rel


@pytest.mark.parametrize(("args", "message"), [
    # A bucket the account does not have answers as another account's would: the name's existence is not told.
    (["ls", "s3://missing-bucket"], r"outcrop: AccessDeniedException: User: arn:aws:iam::\d{12}:root is not "
     r"authorized to perform: s3:ListBucket on resource: arn:aws:s3:::missing-bucket: no bucket of account \d{12} "
     r"has that name, and no bucket policy grants it\n"),
    (["cp", "s3://missing-bucket/k", "x"], r"outcrop: AccessDeniedException: .* s3:GetObject on resource: "
     r"arn:aws:s3:::missing-bucket/k: no bucket of account \d{12} has that name.*\n"),
    (["cp", "a", "b"], r"outcrop: ValidationException: cp needs an s3:// URI on at least one side\n"),
    (["cp", "/no/such/file", "s3://missing-bucket/k"],
     r"outcrop: AccessDeniedException: .* s3:PutObject on resource: arn:aws:s3:::missing-bucket/k: .*\n"),
    (["mb", "s3://Bad_Bucket"], None),
    (["rm", "s3://missing-bucket/../etc/passwd"], None),
])
def test_cli_errors_are_one_line(capsys, data_dir, args, message):
    code, out, err = s3(capsys, data_dir, *args)
    assert code == 1 and out == "" and err.count("\n") == 1 and err.startswith("outcrop: ")
    if message:
        assert re.fullmatch(message, err), err


def test_cli_as_a_subprocess(tmp_path):
    data_dir = str(tmp_path / "data")

    def outcrop(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "outcrop", "s3", *args, "--data-dir", data_dir],
                              input=stdin, capture_output=True, timeout=60, check=False)

    assert outcrop("mb", "s3://bkt").stdout == b"make_bucket: bkt\n"
    assert outcrop("cp", "-", "s3://bkt/notes/hello.txt", stdin=b"hello\n").returncode == 0
    listing = outcrop("ls", "s3://bkt/notes/")
    assert listing.returncode == 0 and listing.stdout.decode().endswith("         6 hello.txt\n")
    assert (tmp_path / "data" / "objects" / "bkt" / "notes" / "hello.txt").read_bytes() == b"hello\n"
    missing = outcrop("rb", "s3://nope")
    assert missing.returncode == 1 and re.fullmatch(
        rb"outcrop: AccessDeniedException: .*arn:aws:s3:::nope: no bucket of account \d{12} has that name.*\n",
        missing.stderr)
