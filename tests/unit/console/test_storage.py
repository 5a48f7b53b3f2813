"""The object store pages: buckets, one folder level, upload, download, delete, and what a policy stops."""

from __future__ import annotations

import urllib.parse

from outcrop.api.asgi import LOOPBACK
from outcrop.api.console.app import COOKIE
from outcrop.api.console.pages import storage
from tests.unit.console.conftest import Browser

READ_CATALOG = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["bedrock:ListFoundationModels"], "Resource": "*"}]}
LIST_BUCKETS_ONLY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["s3:ListAllMyBuckets"], "Resource": "*"}]}
#: Not valid UTF-8, with a NUL and CR LF: what a text round trip would mangle.
PAYLOAD = bytes(range(256)) + b"\r\n\x00\xff" * 100


def _download(browser: Browser, path: str) -> tuple[int, dict[str, str], bytes]:
    """A GET whose raw bytes matter (Browser decodes bodies as text)."""
    path, _, query = path.partition("?")
    response = browser.app.handle("GET", f"/console/{path}", dict(urllib.parse.parse_qsl(query)),
                                  {"host": "127.0.0.1:8000", "cookie": f"{COOKIE}={browser.cookie}"}, b"", LOOPBACK,
                                  "127.0.0.1")
    body = response.body if isinstance(response.body, bytes) else response.body.encode()
    return response.status, {k.lower(): v for k, v in response.headers}, body


def test_creating_a_bucket_lists_it_and_a_bad_name_shows_the_stores_words(root):
    empty = root.get("storage")
    assert empty.status == 200 and "No buckets yet." in empty.body
    bad = root.post("storage", {"bucket": "Not_A_Bucket"})
    assert bad.status == 400 and bad.errors()[0].startswith("ValidationException: invalid bucket name 'Not_A_Bucket'")
    assert 'value="Not_A_Bucket"' in bad.body  # the name comes back to fix
    made = root.post("storage", {"bucket": "training-data"})
    assert made.status == 303 and made.location == "/console/storage/training-data"
    listed = root.get("storage")
    assert 'href="/console/storage/training-data"' in listed.body and "s3://training-data/" in listed.body
    assert root.get("storage/training-data").status == 200


def test_upload_list_download_and_delete_an_object(root):
    root.post("storage", {"bucket": "training-data"})
    key = "data/résumé 1.bin"
    sent = root.post("storage/training-data/upload", {"prefix": "", "key": key},
                     files={"file": ("local.bin", PAYLOAD)})
    assert sent.status == 303, sent.errors()
    assert sent.location == "/console/storage/training-data?" + urllib.parse.urlencode(
        {"prefix": "data/", "done": "uploaded"})
    top = root.get("storage/training-data")
    assert 'href="/console/storage/training-data?prefix=data%2F"' in top.body  # the folder, one level only
    assert "résumé" not in top.body
    folder = root.get("storage/training-data?prefix=data/")
    assert folder.status == 200 and "résumé 1.bin" in folder.body and f"{len(PAYLOAD)} bytes" in folder.body
    assert "Uploaded" not in folder.body and "Uploaded." in root.get(sent.location).body
    assert "Uploaded" not in root.get("storage/training-data?prefix=data/&uploaded=Sign+in+at+evil").body
    assert "training-data</a> / <span aria-current=\"page\">data</span>" in folder.body  # the breadcrumb
    link = f"storage/training-data/object?key={urllib.parse.quote(key, safe='')}"
    assert f'href="/console/{link}"' in folder.body
    status, headers, body = _download(root, link)
    assert status == 200 and body == PAYLOAD
    assert headers["content-type"] == "application/octet-stream"
    assert headers["content-disposition"] == "attachment; filename*=UTF-8''r%C3%A9sum%C3%A9%201.bin"
    gone = root.post("storage/training-data/delete", {"key": key})
    assert gone.status == 303 and "done=deleted" in gone.location
    assert "résumé" not in root.get("storage/training-data?prefix=data/").body
    missing = root.get(link)
    assert missing.status == 404 and "no such object" in missing.body


def test_an_upload_takes_the_files_name_in_the_current_folder_and_shows_the_stores_errors(root, services):
    root.post("storage", {"bucket": "training-data"})
    sent = root.post("storage/training-data/upload", {"prefix": "in/", "key": "in/"},
                     files={"file": ("train.jsonl", b'{"prompt": "a"}\n')})
    assert sent.status == 303, sent.errors()
    assert services.store.get_bytes("s3://training-data/in/train.jsonl") == b'{"prompt": "a"}\n'
    bad = root.post("storage/training-data/upload", {"prefix": "", "key": "a/../b"},
                    files={"file": ("x.txt", b"x")})
    assert bad.status == 400 and "invalid object key" in bad.errors()[0] and 'value="a/../b"' in bad.body
    nothing = root.post("storage/training-data/upload", {"prefix": "", "key": ""}, files={"file": ("", b"")})
    assert nothing.status == 400 and nothing.errors() == ["Choose a file to upload."]


def test_a_big_folder_is_listed_up_to_the_cap_with_a_note(root, services, monkeypatch):
    root.post("storage", {"bucket": "many"})
    for name in ("a/x", "b", "c", "d"):
        services.store.put_bytes(f"s3://many/{name}", b"1")
    monkeypatch.setattr(storage, "LISTING_LIMIT", 3)
    page = root.get("storage/many")
    assert "Showing the first 3 entries only" in page.body
    assert "prefix=a%2F" in page.body and ">b<" in page.body and ">c<" in page.body and ">d<" not in page.body


def test_an_empty_bucket_can_be_deleted_and_a_full_one_says_why_not(root, services):
    root.post("storage", {"bucket": "scratch"})
    services.store.put_bytes("s3://scratch/x", b"1")
    full = root.post("storage/scratch/delete-bucket")
    assert full.status == 400 and "not empty" in full.errors()[0]
    root.post("storage/scratch/delete", {"key": "x"})
    assert root.post("storage/scratch/delete-bucket").location == "/console/storage"
    assert "scratch" not in root.get("storage").body


def test_a_user_without_s3_permissions_is_denied_in_the_apis_words(root, user_browser):
    root.post("storage", {"bucket": "training-data"})
    outsider = user_browser("outsider", READ_CATALOG)
    denied = outsider.get("storage")
    assert denied.status == 403 and "s3:ListAllMyBuckets" in denied.body
    lister = user_browser("lister", LIST_BUCKETS_ONLY)
    assert "training-data" in lister.get("storage").body
    folder = lister.get("storage/training-data")
    assert folder.status == 403 and "s3:ListBucket" in folder.body
    fetch = lister.get("storage/training-data/object?key=x")
    assert fetch.status == 403 and "s3:GetObject" in fetch.body
    upload = lister.post("storage/training-data/upload", {"key": "x"}, files={"file": ("x", b"x")})
    assert upload.status == 403 and "s3:PutObject" in upload.body
