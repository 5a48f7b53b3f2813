"""`outcrop iam`: accounts, users, roles, access keys and policies, straight on the database.

Works whether or not a server runs (the server reads keys and policies on every request). Unless
`--account` says otherwise, commands act in the first account, the one `outcrop serve` created.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from outcrop.platform.config import load_settings


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("iam", help="accounts, users, roles, access keys and policies")
    commands = parser.add_subparsers(dest="iam_command", required=True, metavar="SUBCOMMAND")
    account = argparse.ArgumentParser(add_help=False, parents=[common])
    account.add_argument("--account", metavar="ID", help="the 12-digit account (default: the first one)")

    def command(name: str, func, help: str, parents=(account,)) -> argparse.ArgumentParser:
        p = commands.add_parser(name, parents=list(parents), help=help)
        p.set_defaults(func=func)
        return p

    p = command("create-account", _create_account, "a new account with its root access key", parents=(common,))
    p.add_argument("--name", required=True)
    command("list-accounts", _list_accounts, "accounts and their ids", parents=(common,))

    p = command("create-user", _create_user, "a user (prints its ARN)")
    p.add_argument("--name", required=True)
    p = command("create-role", _create_role, "a service role that Bedrock jobs can assume (prints its ARN alone)")
    p.add_argument("--name", required=True)
    p.add_argument("--s3-access", metavar="BUCKET[/PREFIX]",
                   help="grant s3:GetObject, s3:ListBucket and (unless --read-only) s3:PutObject there")
    p.add_argument("--read-only", action="store_true")
    p.add_argument("--invoke-models", action="store_true",
                   help="grant bedrock:InvokeModel on every model of the account (evaluation jobs need it)")
    p.add_argument("--trust-policy", metavar="FILE|JSON", help="default: trust bedrock.amazonaws.com")
    for kind in ("user", "role"):
        p = command(f"delete-{kind}", _delete_principal, f"delete a {kind}, its keys and policies")
        p.add_argument("--name", required=True)
        p.set_defaults(kind=kind)
        p = command(f"list-{kind}s", _list_principals, f"the account's {kind}s")
        p.set_defaults(kind=kind)
        p = command(f"put-{kind}-policy", _put_policy, f"attach or replace an inline policy on a {kind}")
        p.add_argument(f"--{kind}-name", dest="name", required=True)
        p.add_argument("--policy-name", required=True)
        p.add_argument("--policy-document", required=True, metavar="FILE|JSON")
        p.set_defaults(kind=kind)
        p = command(f"delete-{kind}-policy", _delete_policy, f"remove an inline policy from a {kind}")
        p.add_argument(f"--{kind}-name", dest="name", required=True)
        p.add_argument("--policy-name", required=True)
        p.set_defaults(kind=kind)
        p = command(f"get-{kind}-policies", _get_policies, f"the inline policies of a {kind}, as JSON")
        p.add_argument(f"--{kind}-name", dest="name", required=True)
        p.set_defaults(kind=kind)

    p = command("create-access-key", _create_access_key, "a SigV4 key pair (or --bearer: an API key) for a user")
    p.add_argument("--user-name", help="default: the account root")
    p.add_argument("--bearer", action="store_true", help="an API key for AWS_BEARER_TOKEN_BEDROCK")
    p = command("update-access-key", _update_access_key, "set a key Active or Inactive", parents=(common,))
    p.add_argument("--access-key-id", required=True)
    p.add_argument("--status", required=True, choices=["Active", "Inactive"])
    p = command("delete-access-key", _delete_access_key, "delete a key", parents=(common,))
    p.add_argument("--access-key-id", required=True)


def open_iam(args: argparse.Namespace, bootstrap: bool = False):
    """(IamService, the account a command acts in, settings), straight on the migrated database.

    With `bootstrap`, a data dir with no account yet gets its first one, as `outcrop serve` would make it
    (its root key is written to the credentials file when the server starts)."""
    from outcrop.iam.service import IamService
    from outcrop.platform.database import Database

    settings = load_settings(data_dir=args.data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url)
    db.migrate()
    iam = IamService(db, settings.data_dir)
    if bootstrap:
        iam.bootstrap(settings.root_access_key_id, settings.root_secret_access_key)
    return iam, getattr(args, "account", None) or _first_account(iam), settings


def _iam(args: argparse.Namespace):
    iam, account, _ = open_iam(args)
    return iam, account


def _first_account(iam) -> str:
    from outcrop.errors import ResourceNotFoundException

    try:
        return iam.default_account()
    except RuntimeError:
        raise ResourceNotFoundException("No account exists yet: start `outcrop serve` once, "
                                        "or run `outcrop iam create-account`") from None


def _arn(account: str, kind: str, name: str | None) -> str:
    from outcrop.iam.principal import principal_arn

    return principal_arn(account, kind, name or "") if name else principal_arn(account, "root", "")


def read_document(value: str) -> str:
    """A policy given inline as JSON or as a file name (with or without the AWS CLI's file:// prefix)."""
    path = Path(value.removeprefix("file://"))
    return path.read_text() if not value.lstrip().startswith("{") and path.is_file() else value


def _print_json(value) -> None:
    json.dump(value, sys.stdout, indent=2)
    print()


def _create_account(args):
    from outcrop.iam.service import IamService
    from outcrop.platform.database import Database

    settings = load_settings(data_dir=args.data_dir)
    db = Database(settings.resolved_database_url)
    db.migrate()
    key = IamService(db, settings.data_dir).create_account(args.name)
    _print_json({"AccountId": key.principal_arn.split(":")[4], "AccessKeyId": key.access_key_id,
                 "SecretAccessKey": key.secret})


def _list_accounts(args):
    from sqlalchemy import select

    from outcrop.iam.tables import AccountRow

    iam, _ = _iam(args)
    with iam.db.session() as session:
        for row in session.scalars(select(AccountRow).order_by(AccountRow.created_at)):
            print(f"{row.account_id}  {row.name}")


def _create_user(args):
    iam, account = _iam(args)
    print(iam.create_user(account, args.name).arn)


def _create_role(args):
    from outcrop.errors import ValidationException

    iam, account = _iam(args)
    trust = read_document(args.trust_policy) if args.trust_policy else None
    if args.read_only and not args.s3_access:
        raise ValidationException("--read-only needs --s3-access")
    role = iam.create_service_role(account, args.name, trust, s3_access=args.s3_access, read_only=args.read_only,
                                   invoke_models=args.invoke_models)
    print(role.arn)


def _delete_principal(args):
    iam, account = _iam(args)
    iam.delete_principal(_arn(account, args.kind, args.name))


def _list_principals(args):
    iam, account = _iam(args)
    for principal in iam.list_principals(account, args.kind):
        print(principal.arn)


def _put_policy(args):
    iam, account = _iam(args)
    iam.put_policy(_arn(account, args.kind, args.name), args.policy_name, read_document(args.policy_document))


def _delete_policy(args):
    iam, account = _iam(args)
    iam.delete_policy(_arn(account, args.kind, args.name), args.policy_name)


def _get_policies(args):
    iam, account = _iam(args)
    _print_json(iam.policy_documents(_arn(account, args.kind, args.name)))


def _create_access_key(args):
    from outcrop.iam.service import BEARER, SIGV4

    iam, account = _iam(args)
    key = iam.create_access_key(_arn(account, "user", args.user_name), BEARER if args.bearer else SIGV4)
    if args.bearer:
        _print_json({"ApiKeyId": key.access_key_id, "ApiKey": key.secret})
    else:
        _print_json({"AccessKeyId": key.access_key_id, "SecretAccessKey": key.secret})


def _update_access_key(args):
    iam, _ = _iam(args)
    iam.set_key_status(args.access_key_id, args.status)


def _delete_access_key(args):
    iam, _ = _iam(args)
    iam.delete_access_key(args.access_key_id)
