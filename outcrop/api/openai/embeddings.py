"""Embeddings as InvokeModel with Bedrock's embedding bodies. Pure functions: no I/O.

One text goes as an Amazon Titan Embeddings body. A list goes in Cohere Embed bodies of up to 96 texts
each (one model pass and one request of quota per body, where a Titan body per text would spend a request
per text); a text beyond Cohere's 2048 characters goes alone as a Titan body, and so does every text when
`dimensions` is asked for (Titan's field). Both bodies embed a text the same way (the model's pooling,
normalized), so a vector does not depend on the way it went.
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass
from typing import Any

from outcrop.api.openai import fields
from outcrop.api.openai.errors import InvalidRequest
from outcrop.runtime.embeddings import COHERE_MAX_CHARS, COHERE_MAX_TEXTS

FIELDS = frozenset({"model", "input", "encoding_format", "dimensions", "user"})
#: OpenAI's limit on the texts of one request.
MAX_INPUTS = 2048
ENCODINGS = ("float", "base64")


@dataclass(frozen=True)
class EmbeddingRequest:
    model: str
    texts: tuple[str, ...]
    encoding: str
    dimensions: int | None
    metadata: dict[str, str]


@dataclass(frozen=True)
class Call:
    """One InvokeModel: the positions of the texts it embeds, and its body."""

    positions: tuple[int, ...]
    body: dict[str, Any]


def parse(body: dict[str, Any]) -> EmbeddingRequest:
    fields.only_fields(body, FIELDS)
    model = fields.string(body, "model")
    value = body.get("input")
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts:
        raise InvalidRequest("input is required: a string or a non-empty list of strings", "input")
    if len(texts) > MAX_INPUTS:
        raise InvalidRequest(f"input holds {len(texts)} texts; at most {MAX_INPUTS} are accepted", "input")
    for i, text in enumerate(texts):
        where = "input" if isinstance(value, str) else f"input[{i}]"
        if isinstance(text, int | list):
            raise InvalidRequest("input as token ids is not supported: send the text", where, "unsupported_value")
        if not isinstance(text, str) or not text.strip():
            raise InvalidRequest(f"{where} must be a non-empty string", where)
    encoding = body.get("encoding_format") or "float"
    if encoding not in ENCODINGS:
        raise InvalidRequest(f"encoding_format must be float or base64, got {json.dumps(encoding)}",
                             "encoding_format")
    return EmbeddingRequest(model, tuple(texts), encoding, fields.integer(body, "dimensions", 1),
                            fields.request_metadata(body, with_metadata=False))


def calls(request: EmbeddingRequest) -> list[Call]:
    """The InvokeModel bodies that embed every text of `request` (see the module's docstring)."""
    titan = [i for i, text in enumerate(request.texts)
             if len(request.texts) == 1 or request.dimensions is not None or len(text) > COHERE_MAX_CHARS]
    alone = set(titan)
    batched = [i for i in range(len(request.texts)) if i not in alone]
    out = []
    for i in titan:
        body: dict[str, Any] = {"inputText": request.texts[i]}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        out.append(Call((i,), body))
    for start in range(0, len(batched), COHERE_MAX_TEXTS):
        positions = tuple(batched[start:start + COHERE_MAX_TEXTS])
        # input_type is required by Cohere's body; the runtime's models embed queries and documents alike.
        out.append(Call(positions, {"texts": [request.texts[i] for i in positions], "input_type": "search_document",
                                    "truncate": "NONE"}))
    return out


def vectors(answer: dict[str, Any]) -> list[list[float]]:
    """The vectors of a Titan (`embedding`) or Cohere (`embeddings`) answer, in its texts' order."""
    return [answer["embedding"]] if "embedding" in answer else answer["embeddings"]


def encode(vector: list[float], encoding: str) -> list[float] | str:
    """`base64`: the vector's little-endian float32 bytes, what OpenAI sends and its SDK decodes."""
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def response(request: EmbeddingRequest, by_position: dict[int, list[float]], tokens: int) -> dict[str, Any]:
    return {"object": "list", "model": request.model,
            "data": [{"object": "embedding", "index": i, "embedding": encode(by_position[i], request.encoding)}
                     for i in range(len(request.texts))],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
