"""The child process an entry-point function runs in: `python -m outcrop.functions.runner module:function`.

The event comes as JSON on stdin, the result leaves as JSON on stdout, and nothing else is written there:
whatever the user's code prints (Python or C) goes to stderr, as a Lambda function's prints go to its log,
so that a `print` cannot corrupt the result. A failure is a traceback on stderr and a non-zero exit; the
parent (`Functions.invoke`) reads the last stderr line, which names the exception. Imports nothing of
Outcrop, so the child starts quickly.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback

#: The exit status for a result that is not JSON (the function ran, its answer cannot be sent back).
NOT_JSON = 3


def main(argv: list[str]) -> int:
    if len(argv) != 1 or ":" not in argv[0]:
        print("usage: python -m outcrop.functions.runner module:function", file=sys.stderr)
        return 2
    event = json.load(sys.stdin)
    result_stream = _claim_stdout()
    try:
        result = _call(argv[0], event)
    except BaseException:  # SystemExit included: the function failed, and says how on stderr
        traceback.print_exc()
        sys.stderr.flush()
        return 1
    try:
        text = json.dumps(result)
    except (TypeError, ValueError) as exc:
        print(f"The function's result is not JSON: {exc}", file=sys.stderr)
        return NOT_JSON
    result_stream.write(text)
    result_stream.flush()
    return 0


def _claim_stdout():
    """Keep the real stdout for the result and point fd 1 (and `sys.stdout`) at stderr for everything else."""
    result_stream = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return result_stream


def _call(entry_point: str, event: object) -> object:
    module, _, name = entry_point.partition(":")
    # Lambda calls a handler with (event, context); Outcrop has no context object to give, so None.
    function = getattr(importlib.import_module(module), name)
    return function(event, None) if _takes_two(function) else function(event)


def _takes_two(function) -> bool:
    """Whether `function` wants Lambda's (event, context) rather than the event alone: two required positional
    parameters, or *args (a ported Lambda handler); `f(event, context=None)` gets the event alone."""
    import inspect

    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return False
    required = [p for p in parameters
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    return len(required) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in parameters)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
