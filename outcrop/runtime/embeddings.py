"""The embedding bodies InvokeModel takes, told apart by shape: Amazon Titan Embeddings and Cohere Embed.

An application written for `amazon.titan-embed-text-v2:0` or `cohere.embed-english-v3` sends its own
provider's body whatever local model answers (an alias maps the id). Both are parsed into one
`EmbeddingRequest`, the model embeds its texts, and `render` writes the answer in the body's format,
every requested output type included: a type this server cannot produce is refused, never dropped.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import torch

from outcrop.errors import ValidationException
from outcrop.runtime.formats import integer_field, only_keys, string_field

TITAN, COHERE = "Amazon Titan Embeddings", "Cohere Embed"
#: Cohere Embed v3's limits on Bedrock: texts per request and characters per text.
COHERE_MAX_TEXTS, COHERE_MAX_CHARS = 96, 2048
COHERE_INPUT_TYPES = ("search_document", "search_query", "classification", "clustering")
#: Cohere's `truncate`: NONE refuses an over-long text; START drops its beginning, END its end.
COHERE_TRUNCATE = ("NONE", "START", "END")
COHERE_TYPES = ("float", "int8", "uint8", "binary", "ubinary")
TITAN_TYPES = ("float", "binary")
#: Titan Text Embeddings V2's `dimensions`. A model of another size answers them by `resize`: a larger size by
#: zero-padding its vector, which keeps every length and dot product, so cosine similarities are exactly the
#: model's own; a smaller one (256 for all-MiniLM's 384) by keeping the leading dimensions, renormalized when
#: `normalize` is true, which CHANGES similarities: the model was not trained, as Titan V2 was, to keep its
#: meaning in its leading dimensions. The model's own size is accepted too, and is the default.
TITAN_DIMENSIONS = (256, 512, 1024)


@dataclass(frozen=True)
class EmbeddingRequest:
    format: str
    texts: tuple[str, ...]
    dimensions: int | None = None
    normalize: bool = True
    #: Output types asked for by name (Titan's `embeddingTypes`, Cohere's `embedding_types`); empty: the default.
    types: tuple[str, ...] = ()
    truncate: str = "NONE"


def parse(body: dict[str, Any]) -> EmbeddingRequest:
    """The request a Titan (`inputText`) or Cohere (`texts`) body makes, or ValidationException."""
    if "texts" in body or "input_type" in body:
        return _parse_cohere(body)
    if "inputText" in body:
        return _parse_titan(body)
    raise ValidationException("The request body fits no format this model accepts. Expected Amazon Titan "
                              "Embeddings {inputText, dimensions, normalize, embeddingTypes} or Cohere Embed "
                              "{texts, input_type, truncate, embedding_types}")


def _types(body: dict, key: str, allowed: tuple[str, ...], fmt: str) -> tuple[str, ...]:
    value = body.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
        raise ValidationException(f"{key} must be a non-empty list of strings")
    unknown = [t for t in value if t not in allowed]
    if unknown:
        raise ValidationException(f"{key}: {', '.join(unknown)} is not an embedding type of {fmt}; "
                                  f"accepted: {', '.join(allowed)}")
    return tuple(dict.fromkeys(value))


def _parse_titan(body: dict[str, Any]) -> EmbeddingRequest:
    only_keys(body, {"inputText", "dimensions", "normalize", "embeddingTypes"}, TITAN)
    normalize = body.get("normalize", True)
    if not isinstance(normalize, bool):
        raise ValidationException("normalize must be true or false")
    text = string_field(body, "inputText")
    if not text.strip():
        raise ValidationException("inputText must not be empty")
    return EmbeddingRequest(TITAN, (text,), integer_field(body, "dimensions", 1, 8192, None), normalize,
                            _types(body, "embeddingTypes", TITAN_TYPES, TITAN))


def _parse_cohere(body: dict[str, Any]) -> EmbeddingRequest:
    only_keys(body, {"texts", "input_type", "truncate", "embedding_types"}, COHERE)
    texts = body.get("texts")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise ValidationException("texts is required and must be a non-empty list of strings")
    if len(texts) > COHERE_MAX_TEXTS:
        raise ValidationException(f"texts holds {len(texts)} strings; at most {COHERE_MAX_TEXTS} are accepted")
    for i, text in enumerate(texts):
        if not text.strip():
            raise ValidationException(f"texts[{i}] must not be empty")
        if len(text) > COHERE_MAX_CHARS:
            raise ValidationException(f"texts[{i}] has {len(text)} characters; at most {COHERE_MAX_CHARS}")
    # Required on Bedrock, and checked; it names the texts' role, which a symmetric model (one that embeds
    # queries and documents alike, as all-MiniLM does) needs no different treatment for.
    input_type = body.get("input_type")
    if input_type not in COHERE_INPUT_TYPES:
        raise ValidationException(f"input_type is required and must be one of {', '.join(COHERE_INPUT_TYPES)}, "
                                  f"got {input_type!r}")
    truncate = body.get("truncate", "NONE")
    if truncate not in COHERE_TRUNCATE:
        raise ValidationException(f"truncate must be one of {', '.join(COHERE_TRUNCATE)}, got {truncate!r}")
    return EmbeddingRequest(COHERE, tuple(texts), None, True,
                            _types(body, "embedding_types", COHERE_TYPES, COHERE), truncate)


def check_dimensions(request: EmbeddingRequest, size: int, model_id: str) -> None:
    """Refuse `dimensions` other than Titan V2's sizes or the model's own `size`, before anything is embedded."""
    if request.dimensions is not None and request.dimensions != size and request.dimensions not in TITAN_DIMENSIONS:
        raise ValidationException(f"dimensions must be one of {', '.join(map(str, TITAN_DIMENSIONS))} (or {size}, the "
                                  f"embedding size of {model_id}), got {request.dimensions}")


def resize(vectors: torch.Tensor, dimensions: int | None, normalize: bool) -> torch.Tensor:
    """Rows of `vectors` at `dimensions` (see TITAN_DIMENSIONS): zero-padded when larger, which changes no
    similarity; cut to the leading dimensions when smaller (renormalized if `normalize`), which does."""
    size = vectors.shape[1]
    if dimensions is None or dimensions == size:
        return vectors
    if dimensions > size:
        return torch.nn.functional.pad(vectors, (0, dimensions - size))
    cut = vectors[:, :dimensions]
    return torch.nn.functional.normalize(cut, dim=1) if normalize else cut


def token_ids(tokenizer: Any, request: EmbeddingRequest, limit: int, model_id: str) -> list[list[int]]:
    """Each text's token ids, the model's special tokens ([CLS]/[SEP], BOS/EOS) included, within its window
    of `limit` tokens: what is embedded, billed and counted (CountTokens) alike. A cut text keeps them."""
    return [_within(tokenizer, text, limit, request.truncate, model_id) for text in request.texts]


def _within(tokenizer: Any, text: str, limit: int, truncate: str, model_id: str) -> list[int]:
    full = tokenizer(text)["input_ids"]
    if len(full) <= limit:
        return full
    body = tokenizer(text, add_special_tokens=False)["input_ids"]
    # The special tokens wrap the text's own: find where it sits to keep them around what is left of it.
    start = next((i for i in range(len(full) - len(body) + 1) if full[i:i + len(body)] == body), 0)
    prefix, suffix = full[:start], full[start + len(body):]
    specials = len(prefix) + len(suffix)
    return prefix + fit(body, limit - specials, truncate, model_id, specials) + suffix


def fit(ids: list[int], room: int, truncate: str, model_id: str, specials: int = 0) -> list[int]:
    """A text's token ids within `room` (the window less the special tokens around them), cut as `truncate`
    says (the special tokens stay), or ValidationException."""
    if len(ids) <= room:
        return ids
    if truncate == "END":
        return ids[:room]
    if truncate == "START":
        return ids[-room:]
    raise ValidationException(f"Input is too long for requested model: {len(ids) + specials} tokens, "
                              f"the limit of {model_id} is {room + specials}.")


def render(request: EmbeddingRequest, vectors: torch.Tensor, token_counts: list[int]) -> dict[str, Any]:
    """The answer in the request's format; `vectors` holds one row per text."""
    if request.format == TITAN:
        vectors = resize(vectors, request.dimensions, request.normalize)
        vector = vectors[0]
        answer: dict[str, Any] = {"embedding": vector.float().tolist(), "inputTextTokenCount": token_counts[0]}
        if request.types:
            answer["embeddingsByType"] = {t: _typed(vectors, t, TITAN)[0] for t in request.types}
        return answer
    answer = {"id": str(uuid.uuid4()), "texts": list(request.texts)}
    if request.types:
        return {**answer, "embeddings": {t: _typed(vectors, t, COHERE) for t in request.types},
                "response_type": "embeddings_by_type"}
    return {**answer, "embeddings": vectors.float().tolist(), "response_type": "embeddings_floats"}


def _typed(vectors: torch.Tensor, kind: str, fmt: str) -> list[list]:
    """Rows of `vectors` as one output type.

    float as is. int8/uint8: each row scaled by its largest magnitude onto [-127, 127] (uint8 shifted by
    128), which keeps cosine similarity within about 1%. binary (Titan): one 0/1 per dimension, the sign.
    ubinary/binary (Cohere): the signs packed eight to a byte, most significant bit first; binary is
    ubinary minus 128, so it fits a signed byte."""
    rows = vectors.float()
    if kind == "float":
        return rows.tolist()
    if kind in ("int8", "uint8"):
        scale = rows.abs().amax(dim=1, keepdim=True).clamp(min=1e-12)
        quantized = torch.round(rows / scale * 127).to(torch.int64)
        return (quantized + 128 if kind == "uint8" else quantized).tolist()
    bits = (rows > 0).to(torch.int64)
    if fmt == TITAN:  # Titan's only other type is binary, unpacked
        return bits.tolist()
    width = (bits.shape[1] + 7) // 8 * 8
    padded = torch.nn.functional.pad(bits, (0, width - bits.shape[1]))
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.int64)
    packed = (padded.view(bits.shape[0], -1, 8) * weights).sum(dim=2)
    return (packed - 128 if kind == "binary" else packed).tolist()

