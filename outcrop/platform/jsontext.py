"""Strict JSON text: one loader for every body that arrives from outside.

`json.loads` accepts what cannot be stored or tokenized later: unpaired surrogates (`"\\ud800"`, or
raw bytes decoded with surrogatepass) and nesting deep enough to exhaust the recursion limit. Both
become a `ValueError` here, which each door turns into its own named 4xx error.
"""

from __future__ import annotations

import json
import math
from typing import Any


class InvalidJson(ValueError):
    """Why a text is not JSON we accept; `msg` and `colno` are set for syntax errors."""

    def __init__(self, message: str, msg: str = "", colno: int = 0) -> None:
        super().__init__(message)
        self.msg = msg or message
        self.colno = colno


def loads(data: bytes | str) -> Any:
    try:
        text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
        value = json.loads(text)
        # Encoding the parsed value back is the cheapest complete check for unpaired surrogates.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeError as exc:
        raise InvalidJson(f"not valid UTF-8 text ({exc.reason})") from None
    except RecursionError:
        raise InvalidJson("nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise InvalidJson(str(exc), exc.msg, exc.colno) from None
    except ValueError as exc:
        raise InvalidJson(str(exc)) from None
    return value


def finite(value: Any) -> Any:
    """`value` with every NaN and infinity, at any depth, made None: strict JSON has neither."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value
