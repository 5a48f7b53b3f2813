"""The object store: the account's buckets, one folder level at a time, upload, download and delete objects.

Every call goes through `visit.store()`, so each listing, read and write is authorized as the signed-in
principal's S3 request would be (s3:ListAllMyBuckets, s3:ListBucket with its prefix, s3:GetObject, ...).
"""

from __future__ import annotations

import itertools
import urllib.parse
from datetime import UTC
from typing import Any

from outcrop.api.console.app import Visit, page
from outcrop.api.sessions import Response
from outcrop.errors import BedrockError
from outcrop.platform.objectstore import ObjectInfo

#: Entries one listing page shows (folders first); a bigger folder is for `outcrop s3 ls`.
LISTING_LIMIT = 1000
#: A download is answered from memory in one piece; larger objects are for `outcrop s3 cp`.
DOWNLOAD_LIMIT = 256 * 1024 * 1024
UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


# -- buckets -------------------------------------------------------------------------------------------


#: The notices a page may show after a change, by the code in `?done=`.
NOTICES = {"uploaded": "Uploaded.", "deleted": "Deleted."}

@page("GET", "storage")
def bucket_list(visit: Visit) -> Response:
    return _buckets(visit, visit.store().list_buckets())


@page("POST", "storage")
def create_bucket(visit: Visit) -> Response:
    name = visit.form.get("bucket", "").strip()
    store = visit.store()
    try:
        store.create_bucket(name)
    except BedrockError as exc:
        try:
            names = store.list_buckets()
        except BedrockError:  # may create buckets but not list them: the form still comes back
            names = []
        return _buckets(visit, names, bucket=name, error=f"{exc.code}: {exc.message}", status=exc.status)
    return visit.redirect(f"storage/{urllib.parse.quote(name, safe='')}")


def _buckets(visit: Visit, names: list[str], bucket: str = "", error: str = "", status: int = 200) -> Response:
    return visit.render("storage.html", "Object store", status=status, buckets=names, bucket=bucket, error=error)


@page("POST", "storage/(?P<bucket>[^/]+)/delete-bucket")
def delete_bucket(visit: Visit, bucket: str) -> Response:
    try:
        visit.store().delete_bucket(bucket)
    except BedrockError as exc:  # most often: it still holds objects
        return _failed(visit, bucket, "", exc)
    return visit.redirect("storage")


# -- one folder of a bucket ------------------------------------------------------------------------------


@page("GET", "storage/(?P<bucket>[^/]+)")
def folder(visit: Visit, bucket: str) -> Response:
    return _listing(visit, bucket, visit.query.get("prefix", ""), notice=_notice(visit.query))


def _notice(query: dict[str, str]) -> str:
    """What was just done, named by a code: a link cannot put its own words on the page."""
    return NOTICES.get(query.get("done", ""), "")


def _listing(visit: Visit, bucket: str, prefix: str, *, error: str = "", notice: str = "", status: int = 200,
             key: str | None = None) -> Response:
    """One level under `prefix`: its folders (`list_prefixes`, full keys ending in /) and its objects."""
    store, uri = visit.store(), f"s3://{bucket}/{prefix}"
    folders = list(itertools.islice(store.list_prefixes(uri), LISTING_LIMIT + 1))
    room = max(LISTING_LIMIT - len(folders), 0)
    objects = list(itertools.islice(store.list(uri, recursive=False), room + 1))
    truncated = len(folders) + len(objects) > LISTING_LIMIT
    folders, objects = folders[:LISTING_LIMIT], objects[:room]
    return visit.render(
        "storage_bucket.html", f"{bucket}/{prefix}", status=status, bucket=bucket, folder=prefix,
        crumbs=_crumbs(prefix), folders=[{"prefix": p, "name": p[len(prefix):]} for p in folders],
        objects=[_row(info, prefix) for info in objects], truncated=truncated, limit=LISTING_LIMIT,
        error=error, notice=notice, key=prefix if key is None else key)


def _failed(visit: Visit, bucket: str, prefix: str, exc: BedrockError, key: str | None = None) -> Response:
    """The folder again with the API's words; where the folder itself may not be listed, those words alone."""
    try:
        return _listing(visit, bucket, prefix, error=f"{exc.code}: {exc.message}", status=exc.status, key=key)
    except BedrockError:
        return visit.denied(exc)


def _crumbs(prefix: str) -> list[tuple[str, str]]:
    """(name, prefix) of each folder above and including `prefix`, for the breadcrumb links."""
    parts = prefix.split("/")[:-1]  # a trailing partial name is a filter, not a folder
    return [(part, "/".join(parts[:i + 1]) + "/") for i, part in enumerate(parts)]


def _row(info: ObjectInfo, prefix: str) -> dict[str, Any]:
    return {"key": info.key, "name": info.key[len(prefix):], "size": info.size, "human": _size(info.size),
            "modified": info.last_modified.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")}


def _size(size: float) -> str:
    for unit in UNITS:
        if size < 1024 or unit == UNITS[-1]:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""  # not reached


def _folder_of(key: str) -> str:
    return key.rpartition("/")[0] + "/" if "/" in key else ""


def _back_to(bucket: str, key: str, **notice: str) -> str:
    """The folder page that holds `key`, with a one-line notice of what was done."""
    query = urllib.parse.urlencode({"prefix": _folder_of(key), **notice})
    return f"storage/{urllib.parse.quote(bucket, safe='')}?{query}"


# -- objects ---------------------------------------------------------------------------------------------


@page("POST", "storage/(?P<bucket>[^/]+)/upload")
def upload(visit: Visit, bucket: str) -> Response:
    prefix = visit.form.get("prefix", "")
    filename, data = visit.files.get("file", ("", b""))
    # Browsers of old sent the whole local path; only the file's own name makes sense as a key.
    filename = filename.replace("\\", "/").rsplit("/", 1)[-1]
    key = visit.form.get("key", "").strip() or prefix
    if not filename:
        return _listing(visit, bucket, prefix, error="Choose a file to upload.", status=400, key=key)
    if not key or key.endswith("/"):  # a folder: the file keeps its own name there
        key += filename
    try:
        visit.store().put_bytes(f"s3://{bucket}/{key}", data)
    except BedrockError as exc:
        return _failed(visit, bucket, prefix, exc, key=key)
    return visit.redirect(_back_to(bucket, key, done="uploaded"))


@page("GET", "storage/(?P<bucket>[^/]+)/object")
def download(visit: Visit, bucket: str) -> Response:
    key = visit.query.get("key", "")
    store, uri = visit.store(), f"s3://{bucket}/{key}"
    size = store.head(uri).size
    if size > DOWNLOAD_LIMIT:
        return visit.render("message.html", "Too large to download here", status=413,
                            heading="Too large to download here",
                            message=f"{key} is {_size(size)}; the console hands out objects up to "
                                    f"{_size(DOWNLOAD_LIMIT)}. Copy it with: outcrop s3 cp {uri} .")
    name = key.rsplit("/", 1)[-1] or "object"
    return Response(200, store.get_bytes(uri), [
        ("content-type", "application/octet-stream"),
        ("content-disposition", f"attachment; filename*=UTF-8''{urllib.parse.quote(name, safe='')}")])


@page("POST", "storage/(?P<bucket>[^/]+)/delete")
def delete_object(visit: Visit, bucket: str) -> Response:
    key = visit.form.get("key", "")
    try:
        visit.store().delete(f"s3://{bucket}/{key}")
    except BedrockError as exc:
        return _failed(visit, bucket, _folder_of(key), exc)
    return visit.redirect(_back_to(bucket, key, done="deleted"))
