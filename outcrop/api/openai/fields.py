"""Field checks shared by the door's requests. Each refusal names the OpenAI field at fault (`param`).

Every field of a request is honoured or refused: a field this server cannot honour is accepted only at
its no-op value (`Neutral`), which clients send as defaults (LangChain sends `n: 1`, some SDKs
`frequency_penalty: 0`); any other value is refused, never dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from outcrop.api.openai.errors import InvalidRequest

#: OpenAI's sampling range. Converse's inferenceConfig stops at 1: chat sends a higher temperature as
#: additionalModelRequestFields.temperature (the runtime's own extension, 0 to 2); a native body (completions'
#: Mistral body) keeps Bedrock's range.
MAX_TEMPERATURE = 2.0
BEDROCK_MAX_TEMPERATURE = 1.0
MAX_SEED = 2**63 - 1
#: The most choices (`n`) one request may ask for: each is a sequence of its own in the model's batch, and this
#: is the batch's default size (more would wait for one another).
MAX_CHOICES = 16
#: Converse's `requestMetadata` (botocore's model): what `user` and `metadata` become.
_METADATA_KEY = re.compile(r"[a-zA-Z0-9\s:_@$#=/+,\-.]{1,256}")
_METADATA_VALUE = re.compile(r"[a-zA-Z0-9\s:_@$#=/+,\-.]{0,256}")
MAX_METADATA = 16


@dataclass(frozen=True)
class Neutral:
    """A field accepted only at values that ask nothing this server cannot do."""

    accepts: Callable[[Any], bool]
    why: str


def _off(value: Any) -> bool:
    return value is None or value is False or (not isinstance(value, bool) and value == 0)


PENALTY = Neutral(_off, "this server's sampler has no frequency or presence penalties; send 0 or leave it out.")
LOGIT_BIAS = Neutral(lambda v: v is None or v == {}, "this server's sampler takes no logit biases.")
NO_LOGPROBS = Neutral(lambda v: v is None or v is False,
                      "this server does not return token log probabilities (the Bedrock operations that answer "
                      "this door carry none).")
NO_STORE = Neutral(lambda v: v is None or v is False,
                   "this server keeps no stored completions; Bedrock's invocation logging "
                   "(PutModelInvocationLoggingConfiguration) records invocations instead.")
ONE_TIER = Neutral(lambda v: v in (None, "auto", "default"), "this server has one service tier, default.")
TEXT_ONLY = Neutral(lambda v: v is None or v == ["text"], "this server's models answer in text only.")


def check_neutral(body: dict[str, Any], rules: dict[str, Neutral]) -> None:
    for name, rule in rules.items():
        if name in body and not rule.accepts(body[name]):
            raise InvalidRequest(f"{name}={json.dumps(body[name])} is not supported: {rule.why}", name,
                                 "unsupported_value")


def only_fields(body: dict[str, Any], allowed: set[str] | frozenset[str], where: str = "") -> None:
    """Refuse the first member `allowed` does not list, by name."""
    for key in body:
        if key not in allowed:
            name = f"{where}{key}"
            raise InvalidRequest(f"Unknown parameter: '{name}'. This server does not support it; the accepted "
                                 f"parameters{' of ' + where.rstrip('.') if where else ''} are "
                                 f"{', '.join(sorted(allowed))}.", name, "unknown_parameter")


def body_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where} must be a JSON object, got {_kind(value)}", where or None)
    return value


def string(body: dict[str, Any], name: str, where: str = "") -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{where}{name} is required and must be a non-empty string", f"{where}{name}")
    return value


def boolean(body: dict[str, Any], name: str, default: bool = False, where: str = "") -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidRequest(f"{where}{name} must be true or false, got {json.dumps(value)}", f"{where}{name}")
    return value


def number(body: dict[str, Any], name: str, low: float, high: float, default: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidRequest(f"{name} must be a number between {low:g} and {high:g}, got {json.dumps(value)}", name)
    return float(value)


def integer(body: dict[str, Any], name: str, low: int, high: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise InvalidRequest(f"{name} must be an integer {bound}, got {json.dumps(value)}", name)
    return value


def temperature(body: dict[str, Any], default: float, high: float = MAX_TEMPERATURE) -> float:
    """`temperature`, from 0 to 2 (OpenAI's range), or to `high` where the Bedrock body that answers stops lower."""
    value = body.get("temperature")
    if isinstance(value, int | float) and not isinstance(value, bool) and high < value <= MAX_TEMPERATURE:
        raise InvalidRequest(f"temperature={value:g} is not supported here: this endpoint samples (as Bedrock's "
                             f"body for it does) at temperatures from 0 to {high:g}; /v1/chat/completions takes "
                             f"up to {MAX_TEMPERATURE:g}.", "temperature", "unsupported_value")
    return number(body, "temperature", 0, high, default)


def choices(body: dict[str, Any], name: str = "n") -> int:
    """`n`: how many choices to answer, 1 to MAX_CHOICES."""
    value = body.get(name)
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CHOICES:
        raise InvalidRequest(f"{name} must be an integer between 1 and {MAX_CHOICES} (each choice is a sequence in "
                             f"the model's batch), got {json.dumps(value)}", name)
    return value


def choice_seed(seed: int | None, index: int) -> int | None:
    """Choice `index`'s seed: the request's own for the first, the next ones after it for the others (wrapping),
    so that each choice of a seeded request differs and repeats; None without a seed."""
    return None if seed is None else (seed + index) % (MAX_SEED + 1)


def seed(body: dict[str, Any]) -> int | None:
    return integer(body, "seed", 0, MAX_SEED)


def stop(body: dict[str, Any]) -> list[str]:
    """`stop`: one string or a list of them, none empty."""
    value = body.get("stop")
    if value is None:
        return []
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(s, str) and s for s in values):
        raise InvalidRequest("stop must be a non-empty string or a list of non-empty strings", "stop")
    return values


def max_tokens(body: dict[str, Any], *names: str) -> int | None:
    """The output budget from the first of `names` given; two given with different values are refused."""
    given = {name: integer(body, name, 1) for name in names if body.get(name) is not None}
    if len(set(given.values())) > 1:
        raise InvalidRequest(f"{' and '.join(given)} disagree; send one of them", names[-1])
    return next(iter(given.values()), None)


def request_metadata(body: dict[str, Any], with_metadata: bool = True) -> dict[str, str]:
    """`metadata` (a map of strings) and `user` as Bedrock's requestMetadata: `user` is its `userId`, which
    the insights report groups by (and `metadata` may carry `sessionId` and `domain`, which it also reads)."""
    out: dict[str, str] = {}
    metadata = body.get("metadata") if with_metadata else None
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise InvalidRequest("metadata must be a JSON object whose values are strings", "metadata")
        out.update(metadata)
    user = body.get("user")
    if user is not None:
        if not isinstance(user, str):
            raise InvalidRequest("user must be a string", "user")
        if out.get("userId", user) != user:
            raise InvalidRequest("user and metadata.userId disagree; send one of them", "user")
        out["userId"] = user
    if len(out) > MAX_METADATA:
        raise InvalidRequest(f"metadata holds {len(out)} entries (with user); at most {MAX_METADATA} are accepted",
                             "metadata")
    for key, value in out.items():
        param = "user" if key == "userId" and user is not None else "metadata"
        if not _METADATA_KEY.fullmatch(key) or not _METADATA_VALUE.fullmatch(value):
            raise InvalidRequest(f"{param}: keys (1 to 256) and values (up to 256) may hold letters, digits, spaces "
                                 f"and :_@$#=/+,-. only", param)
    return out


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")
