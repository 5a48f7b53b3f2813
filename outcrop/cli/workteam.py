"""`outcrop workteam`: the work teams (flow definitions) that rate human evaluation jobs.

A work team is a set of the account's IAM users and how many of them rate each item; its flow
definition ARN goes into CreateEvaluationJob's `humanWorkflowConfig.flowDefinitionArn`. Like
`outcrop iam`, it works on the database directly, whether or not a server runs.
"""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("workteam", help="work teams (flow definitions) for human evaluation")
    commands = parser.add_subparsers(dest="workteam_command", required=True, metavar="SUBCOMMAND")
    account = argparse.ArgumentParser(add_help=False, parents=[common])
    account.add_argument("--account", metavar="ID", help="the 12-digit account (default: the first one)")

    p = commands.add_parser("create", parents=[account], help="a work team of IAM users (prints its ARN)")
    p.add_argument("name", help="lowercase letters, digits and hyphens")
    p.add_argument("--users", required=True, metavar="NAME,NAME", help="IAM user names or ARNs, comma-separated")
    p.add_argument("--workers-per-item", type=int, default=1, metavar="N",
                   help="how many different users rate each item (default 1)")
    p.set_defaults(func=_create)
    p = commands.add_parser("list", parents=[account], help="the account's work teams")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_list)
    p = commands.add_parser("delete", parents=[account], help="delete a work team no running job uses")
    p.add_argument("name", help="the work team's name or flow definition ARN")
    p.set_defaults(func=_delete)


def _human(args: argparse.Namespace):
    from outcrop.cli.iam import _iam
    from outcrop.evaluation.human.service import HumanReview
    from outcrop.platform.config import load_settings

    iam, account = _iam(args)
    return HumanReview(iam.db, iam, load_settings(data_dir=args.data_dir).region), account


def _create(args):
    human, account = _human(args)
    users = [u for u in (part.strip() for part in args.users.split(",")) if u]
    print(human.create_flow_definition(account, args.name, users, args.workers_per_item))


def _list(args):
    human, account = _human(args)
    teams = human.list_flow_definitions(account)
    if args.json:
        json.dump([{"name": t.name, "flowDefinitionArn": t.arn, "members": t.members,
                    "workersPerItem": t.workers_per_item, "createdAt": t.created_at.isoformat()} for t in teams],
                  sys.stdout, indent=2)
        print()
        return
    for team in teams:
        members = ",".join(m.rsplit("/", 1)[-1] for m in team.members)
        print(f"{team.arn}  workers-per-item={team.workers_per_item}  users={members}")


def _delete(args):
    human, account = _human(args)
    human.delete_flow_definition(account, args.name)
