"""`outcrop functions`: register what agents' action groups call instead of Lambda, and try it out.

Straight on the local data dir, as `outcrop iam` is: registering a function is not a Bedrock operation, and it
works whether or not a server runs (the server reads the table on every invocation). Unless `--account` says
otherwise, commands act in the first account. `register` prints the ARN alone, to paste where Bedrock wants a
Lambda ARN (`actionGroupExecutor.lambda`); `invoke` runs the function on an event, as an agent would.
"""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("functions", help="the URLs and Python functions agents call instead of Lambda")
    commands = parser.add_subparsers(dest="functions_command", required=True, metavar="SUBCOMMAND")
    account = argparse.ArgumentParser(add_help=False, parents=[common])
    account.add_argument("--account", metavar="ID", help="the 12-digit account (default: the first one)")

    def command(name: str, func, help_text: str) -> argparse.ArgumentParser:
        # The options go on each leaf so that `--data-dir` may come after the arguments, as users type it.
        leaf = commands.add_parser(name, parents=[account], help=help_text, description=help_text)
        leaf.set_defaults(func=func)
        return leaf

    p = command("register", _register, "create or replace a function (prints its ARN alone)")
    p.add_argument("name", metavar="NAME", help="1-64 letters, digits, - and _")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", metavar="URL",
                        help="POST each event here as JSON (the server makes the request; loopback is fine)")
    target.add_argument("--entry-point", metavar="MODULE:FUNCTION",
                        help="call this Python function in a child process (found on the server's PYTHONPATH)")
    p.add_argument("--timeout", type=int, default=None, metavar="SECONDS", help="1-900 (default 30)")
    command("list", _list, "the account's functions: ARN, kind, target, timeout")
    command("delete", _delete, "delete a function").add_argument("name", metavar="NAME")
    p = command("invoke", _invoke, "run a function on an event and print its answer")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--event", required=True, metavar="JSON|FILE", help="a JSON object, inline or in a file")


def _functions(args: argparse.Namespace):
    """(Functions, the account) on the migrated database; a new data dir gets its first account, as
    `outcrop serve` would make it, since a function needs an owner."""
    from outcrop.cli.iam import open_iam
    from outcrop.functions.service import Functions

    iam, account, settings = open_iam(args, bootstrap=True)
    return Functions(iam.db, settings.region), account


def _register(args):
    from outcrop.functions.service import DEFAULT_TIMEOUT_SECONDS

    functions, account = _functions(args)
    timeout = DEFAULT_TIMEOUT_SECONDS if args.timeout is None else args.timeout
    print(functions.register(account, args.name, url=args.url, entry_point=args.entry_point,
                             timeout_seconds=timeout).arn)


def _list(args):
    functions, account = _functions(args)
    for row in functions.list(account):
        print(f"{row.arn}  {row.kind}  {row.target}  {row.timeout_seconds}s")


def _delete(args):
    functions, account = _functions(args)
    functions.delete(account, args.name)


def _invoke(args):
    from outcrop.cli.iam import read_document
    from outcrop.errors import ValidationException
    from outcrop.functions.service import FunctionError

    try:
        event = json.loads(read_document(args.event))
    except ValueError as exc:
        raise ValidationException(f"--event is not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise ValidationException("--event must be a JSON object")
    functions, account = _functions(args)
    try:
        answer = functions.invoke(account, args.name, event)
    except FunctionError as exc:  # the function's failure, reported as an agent would see it
        print(f"outcrop: function failed ({exc.kind}): {exc.message}", file=sys.stderr)
        return 1
    json.dump(answer, sys.stdout, indent=2)
    print()
    return 0
