"""`outcrop s3`: put files into the object store, look inside it, take them out, the way `aws s3` does.

It talks to whichever store the settings name (the embedded folder or an S3 endpoint), so seeding
training data or reading job outputs needs no AWS CLI profile and works the same on both. It acts as
an account's root (`--account`, default the first account, as `outcrop iam` does): it sees and
touches that account's buckets only, and `mb` makes the new bucket that account's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable, Iterable

from botocore.exceptions import BotoCoreError, ClientError

from outcrop.errors import ValidationException
from outcrop.iam.scoped_store import ScopedStore
from outcrop.platform.objectstore import ObjectInfo, S3Uri

#: As a local path, `-` means stdin (as a source) or stdout (as a destination), as in `aws s3 cp`.
STDIO = "-"

Handler = Callable[[ScopedStore, argparse.Namespace], int]


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("s3", help="copy, list and remove objects in the object store (like `aws s3`)")
    commands = parser.add_subparsers(dest="s3_command", required=True, metavar="SUBCOMMAND")
    account = argparse.ArgumentParser(add_help=False, parents=[common])
    account.add_argument("--account", metavar="ID", help="act as this 12-digit account (default: the first one)")

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        # The options go on each leaf so `--data-dir` may come after the arguments, as users type it.
        leaf = commands.add_parser(name, parents=[account], help=help_text, description=help_text)
        leaf.set_defaults(func=_with_store(handler))
        return leaf

    command("mb", _mb, "make a bucket (owned by the account)").add_argument("bucket", metavar="s3://BUCKET")

    rb = command("rb", _rb, "remove an empty bucket")
    rb.add_argument("bucket", metavar="s3://BUCKET")
    rb.add_argument("--force", action="store_true", help="delete every object in the bucket first")

    cp = command("cp", _cp, "copy between local paths and s3:// URIs (- is stdin or stdout)")
    cp.add_argument("src", metavar="SRC")
    cp.add_argument("dst", metavar="DST", help="ending in / (or an existing folder) keeps the source's name")
    cp.add_argument("--recursive", action="store_true", help="copy a folder, or every object under a prefix")

    ls = command("ls", _ls, "list the account's buckets, or the objects and prefixes under s3://BUCKET[/PREFIX]")
    ls.add_argument("uri", nargs="?", metavar="s3://BUCKET[/PREFIX]")
    ls.add_argument("--recursive", action="store_true", help="list every key under the prefix, in full")

    rm = command("rm", _rm, "delete an object")
    rm.add_argument("uri", metavar="s3://BUCKET/KEY")
    rm.add_argument("--recursive", action="store_true", help="delete every object under the prefix")

    put = command("put-bucket-policy", _put_policy,
                  "let principals of other accounts in: a bucket policy whose statements name them")
    put.add_argument("bucket", metavar="s3://BUCKET")
    put.add_argument("--policy", required=True, metavar="FILE|JSON")
    command("get-bucket-policy", _get_policy, "print the bucket's policy").add_argument("bucket", metavar="s3://BUCKET")
    command("delete-bucket-policy", _delete_policy, "remove the bucket's policy").add_argument(
        "bucket", metavar="s3://BUCKET")


def _with_store(handler: Handler) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from outcrop.cli.iam import open_iam
        from outcrop.iam import buckets
        from outcrop.iam.principal import Principal
        from outcrop.platform.objectstore import open_object_store

        iam, account, settings = open_iam(args, bootstrap=True)  # buckets need an owner, even before a server
        try:
            store = open_object_store(settings)
            buckets.adopt_after_upgrade(iam.db, store, iam.default_account)  # buckets from before owners
            return handler(ScopedStore(store, iam, Principal.account_root(account)), args)
        except (OSError, BotoCoreError, ClientError) as exc:  # a local path, or the S3 endpoint itself
            print(f"outcrop: {exc}", file=sys.stderr)
            return 1

    return run


def _is_s3(path: str) -> bool:
    return path.startswith("s3://")


def _bucket(arg: str) -> str:
    uri = S3Uri.parse(arg)
    if uri.key:
        raise ValidationException(f"expected s3://BUCKET, got {arg}")
    return uri.bucket


def _as_folder(uri: S3Uri) -> S3Uri:
    """What `--recursive` means by `s3://b/data`: the keys under `data/`, not also `data.jsonl`."""
    return uri if not uri.key or uri.key.endswith("/") else S3Uri(uri.bucket, uri.key + "/")


def _mb(store: ScopedStore, args: argparse.Namespace) -> int:
    bucket = _bucket(args.bucket)
    store.create_bucket(bucket)
    print(f"make_bucket: {bucket}")
    return 0


def _rb(store: ScopedStore, args: argparse.Namespace) -> int:
    bucket = _bucket(args.bucket)
    if args.force:
        _delete_all(store, list(store.list(S3Uri(bucket))))
    store.delete_bucket(bucket)
    print(f"remove_bucket: {bucket}")
    return 0


def _rm(store: ScopedStore, args: argparse.Namespace) -> int:
    uri = S3Uri.parse(args.uri)
    if args.recursive:
        _delete_all(store, list(store.list(_as_folder(uri))))
    else:
        store.delete(uri)
        print(f"delete: {uri}")
    return 0


def _delete_all(store: ScopedStore, objects: Iterable[ObjectInfo]) -> None:
    for info in objects:
        store.delete(info.uri)
        print(f"delete: {info.uri}")


def _ls(store: ScopedStore, args: argparse.Namespace) -> int:
    if not args.uri:
        for name in store.list_buckets():
            print(name)
        return 0
    uri = S3Uri.parse(args.uri)
    found = False
    if args.recursive:
        for info in store.list(uri):
            print(_ls_line(info, info.key))
            found = True
    else:
        for prefix in store.list_prefixes(uri):
            print(f"{'PRE':>30} {prefix.split('/')[-2]}/")
            found = True
        for info in store.list(uri, recursive=False):
            print(_ls_line(info, info.key.rsplit("/", 1)[-1]))
            found = True
    # Like `aws s3 ls`: a prefix that matches nothing is a failure, an empty bucket is not.
    return 1 if uri.key and not found else 0


def _ls_line(info: ObjectInfo, name: str) -> str:
    return f"{info.last_modified.astimezone():%Y-%m-%d %H:%M:%S} {info.size:>10} {name}"


def _cp(store: ScopedStore, args: argparse.Namespace) -> int:
    if not (_is_s3(args.src) or _is_s3(args.dst)):
        raise ValidationException("cp needs an s3:// URI on at least one side")
    if args.recursive:
        if STDIO in (args.src, args.dst):
            raise ValidationException("- (stdin or stdout) cannot be used with --recursive")
        pairs = _recursive_pairs(store, args.src, args.dst)
    else:
        pairs = [(args.src, _single_destination(args.src, args.dst))]
    for src, dst in pairs:
        _copy_one(store, src, dst)
    return 0


def _single_destination(src: str, dst: str) -> str:
    """`dst` itself, or `dst` plus the source's name when `dst` is a folder."""
    name = S3Uri.parse(src).key.rsplit("/", 1)[-1] if _is_s3(src) else os.path.basename(src)
    if _is_s3(dst):
        uri = S3Uri.parse(dst)
        is_folder = not uri.key or uri.key.endswith("/")
    else:
        is_folder = dst != STDIO and (dst.endswith(os.sep) or os.path.isdir(dst))
    if not is_folder:
        return dst
    if src == STDIO:
        raise ValidationException(f"copying from stdin needs a full destination name, not {dst}")
    return str(S3Uri.parse(dst).join(name)) if _is_s3(dst) else os.path.join(dst, name)


def _recursive_pairs(store: ScopedStore, src: str, dst: str) -> list[tuple[str, str]]:
    """Every (source, destination) a recursive copy makes, listed before the first copy starts.

    Listing first keeps a copy into a prefix below its own source from copying its own output.
    """
    if _is_s3(src):
        prefix = _as_folder(S3Uri.parse(src))
        relatives = [(str(info.uri), info.key[len(prefix.key):]) for info in store.list(prefix)]
    else:
        if not os.path.isdir(src):
            raise ValidationException(f"--recursive needs a folder to copy from: {src}")
        relatives = []
        for folder, dirs, files in os.walk(src):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(folder, name)
                relatives.append((path, os.path.relpath(path, src).replace(os.sep, "/")))
    if _is_s3(dst):
        base = S3Uri.parse(dst)
        return [(source, str(base.join(rel))) for source, rel in relatives]
    return [(source, os.path.join(dst, *rel.split("/"))) for source, rel in relatives]


def _copy_one(store: ScopedStore, src: str, dst: str) -> None:
    if _is_s3(src) and _is_s3(dst):
        store.copy(src, dst)
        verb = "copy"
    elif _is_s3(dst):
        if src == STDIO:
            store.upload_fileobj(sys.stdin.buffer, dst)
            return
        store.upload_file(src, dst)
        verb = "upload"
    elif dst == STDIO:
        with store.open_read(src) as fh:
            sys.stdout.flush()
            shutil.copyfileobj(fh, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        return
    else:
        store.download_file(src, dst)
        verb = "download"
    print(f"{verb}: {src} to {dst}")


def _put_policy(store: ScopedStore, args: argparse.Namespace) -> int:
    from outcrop.cli.iam import read_document
    from outcrop.iam import buckets

    buckets.put_policy(store.iam.db, store.principal.account_id, _bucket(args.bucket), read_document(args.policy))
    return 0


def _get_policy(store: ScopedStore, args: argparse.Namespace) -> int:
    from outcrop.iam import buckets

    policy = buckets.get_policy(store.iam.db, store.principal.account_id, _bucket(args.bucket))
    if policy is None:
        print(f"outcrop: s3://{_bucket(args.bucket)} has no bucket policy", file=sys.stderr)
        return 1
    print(policy)
    return 0


def _delete_policy(store: ScopedStore, args: argparse.Namespace) -> int:
    from outcrop.iam import buckets

    buckets.delete_policy(store.iam.db, store.principal.account_id, _bucket(args.bucket))
    return 0
