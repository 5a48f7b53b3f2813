"""The `outcrop` command. Each subcommand group lives in its own module with a `register` function."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from outcrop import __version__


def _common_parser() -> argparse.ArgumentParser:
    """Flags that every command touching local state takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=None,
                        help="where Outcrop keeps its state (default: $OUTCROP_DATA_DIR, else ~/.outcrop)")
    return common


def build_parser() -> argparse.ArgumentParser:
    from outcrop.cli import (
        agent,
        audit,
        chat,
        evaluation,
        functions,
        iam,
        image,
        insights,
        jobs,
        kb,
        metrics,
        models,
        s3,
        serve,
        workteam,
    )

    parser = argparse.ArgumentParser(prog="outcrop", description=__doc__)
    parser.add_argument("--version", action="version", version=f"outcrop {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common_parser()
    for module in (serve, models, s3, chat, image, iam, jobs, evaluation, kb, functions, agent, audit, metrics,
                   workteam, insights):
        module.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from outcrop.platform.private import private_files

    private_files()  # most commands write into the data dir: 0600 files, 0700 folders (outcrop.platform.private)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `outcrop ... | head`: the reader has what it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141
    except Exception as exc:  # a clean one-line error for the errors users cause
        from outcrop.errors import BedrockError

        if isinstance(exc, BedrockError):
            print(f"outcrop: {exc.code}: {exc.message}", file=sys.stderr)
            return 1
        raise
