"""Well-known Bedrock model ids, and which local model answers for each.

An application written for Bedrock names `anthropic.claude-3-haiku-20240307-v1:0` or
`amazon.titan-embed-text-v2:0`; Outcrop has neither, so by default the built-in chat model answers the chat
and text ids, and the built-in embedding model the embedding ids. The application then runs unchanged, and
the usage record, the bill and GetFoundationModel say which local model answered.

The defaults never shadow a model the catalog really has (`meta.llama3-1-8b-instruct-v1:0` is a hub model
of the catalog, so it is not in this table). `[model_aliases]` in outcrop.toml adds entries or replaces
these, and may alias a catalog id too (then the alias wins); an empty value removes a built-in entry.

System inference profile ids are a geo prefix and a model id (`us.anthropic.claude-3-5-haiku-...`): they
resolve as the model id does (`profiles/service.py`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from outcrop.catalog.service import Aliases

CHAT_MODEL = "huggingface.smollm2-135m-instruct-v1:0"
EMBEDDING_MODEL = "sentence-transformers.all-minilm-l6-v2-v1:0"

#: The chat and text models applications name most, all answered by the built-in chat model.
_CHAT_IDS = (
    "anthropic.claude-instant-v1",
    "anthropic.claude-v2",
    "anthropic.claude-v2:1",
    "anthropic.claude-3-haiku-20240307-v1:0",
    "anthropic.claude-3-sonnet-20240229-v1:0",
    "anthropic.claude-3-opus-20240229-v1:0",
    "anthropic.claude-3-5-haiku-20241022-v1:0",
    "anthropic.claude-3-5-sonnet-20240620-v1:0",
    "anthropic.claude-3-5-sonnet-20241022-v2:0",
    "anthropic.claude-3-7-sonnet-20250219-v1:0",
    "anthropic.claude-sonnet-4-20250514-v1:0",
    "anthropic.claude-opus-4-20250514-v1:0",
    "amazon.nova-micro-v1:0",
    "amazon.nova-lite-v1:0",
    "amazon.nova-pro-v1:0",
    "amazon.titan-text-lite-v1",
    "amazon.titan-text-express-v1",
    "amazon.titan-text-premier-v1:0",
    "meta.llama3-8b-instruct-v1:0",
    "meta.llama3-70b-instruct-v1:0",
    "meta.llama3-1-70b-instruct-v1:0",
    "meta.llama3-2-3b-instruct-v1:0",
    "meta.llama3-3-70b-instruct-v1:0",
    "mistral.mistral-small-2402-v1:0",
    "mistral.mistral-large-2402-v1:0",
    "mistral.mixtral-8x7b-instruct-v0:1",
    "cohere.command-r-plus-v1:0",
    "ai21.jamba-1-5-large-v1:0",
)
#: The embedding models applications name most, answered by the built-in embedding model.
_EMBEDDING_IDS = (
    "amazon.titan-embed-text-v1",
    "amazon.titan-embed-text-v2:0",
    "cohere.embed-english-v3",
    "cohere.embed-multilingual-v3",
)
RERANK_MODEL = "cross-encoder.ms-marco-minilm-l6-v2-v1:0"
#: Bedrock's reranking models, answered by the catalog's cross-encoder.
_RERANK_IDS = ("amazon.rerank-v1:0", "cohere.rerank-v3-5:0")
IMAGE_MODEL = "stability.sd-turbo-v1:0"
#: Bedrock's image models without open weights, answered by the catalog's SD-Turbo (in whichever body they send).
_IMAGE_IDS = ("amazon.titan-image-generator-v1", "amazon.titan-image-generator-v2:0", "amazon.nova-canvas-v1:0",
              "stability.sd3-large-v1:0", "stability.stable-image-core-v1:0", "stability.stable-image-core-v1:1",
              "stability.stable-image-ultra-v1:0", "stability.stable-image-ultra-v1:1")
MULTIMODAL_EMBEDDING_MODEL = "openai.clip-vit-base-patch32-v1:0"
#: Bedrock's multimodal embedding model (text, an image, or both in one vector), answered by the catalog's CLIP.
_MULTIMODAL_EMBEDDING_IDS = ("amazon.titan-embed-image-v1",)
DEFAULT_ALIASES: dict[str, str] = {**dict.fromkeys(_CHAT_IDS, CHAT_MODEL),
                                   **dict.fromkeys(_EMBEDDING_IDS, EMBEDDING_MODEL),
                                   **dict.fromkeys(_RERANK_IDS, RERANK_MODEL),
                                   **dict.fromkeys(_IMAGE_IDS, IMAGE_MODEL),
                                   **dict.fromkeys(_MULTIMODAL_EMBEDDING_IDS, MULTIMODAL_EMBEDDING_MODEL)}

#: The geo prefixes of Bedrock's system inference profiles (`us.`, `eu.`, `apac.`, `global.`).
GLOBAL_GEO = "global"
GEO_PREFIXES = ("us", "eu", "apac", GLOBAL_GEO)
#: A Bedrock model id: provider.name, optional version parts (the catalog's own ids have the same form).
_MODEL_ID = re.compile(r"[a-z0-9-]{1,63}\.[a-z0-9-]{1,63}(\.[a-z0-9-]{1,63})?(:[a-z0-9-]{1,63}){0,2}")


def geo_prefix(region: str) -> str:
    """The geo prefix of the system profiles Bedrock lists in `region` (us-east-1 -> us)."""
    return {"us": "us", "eu": "eu", "ap": "apac"}.get(region.split("-", 1)[0], "us")


def system_profile_model(identifier: str) -> str | None:
    """The model id a system inference profile id names (`us.amazon.nova-micro-v1:0` -> `amazon.nova-micro-v1:0`),
    or None when the identifier has no geo prefix."""
    geo, _, rest = identifier.partition(".")
    return rest if geo in GEO_PREFIXES and "." in rest else None


def model_aliases(configured: Mapping[str, str] | None = None) -> Aliases:
    """The built-in table and the configured entries, checked (a ValueError names the bad entry)."""
    configured = dict(configured or {})
    for alias, target in configured.items():
        if not isinstance(alias, str) or not isinstance(target, str):
            raise ValueError(f"model_aliases: {alias!r} = {target!r} must map a model id to a model id "
                             "(quote the key in outcrop.toml: \"anthropic.claude-3-haiku-20240307-v1:0\" = \"...\")")
        if not _MODEL_ID.fullmatch(alias):
            raise ValueError(f"model_aliases: {alias!r} is not a Bedrock model id (provider.name-v1:0)")
        if system_profile_model(alias) is not None:
            raise ValueError(f"model_aliases: {alias!r} starts with a geo prefix; alias the model id "
                             f"{system_profile_model(alias)!r} and its system profiles follow")
        if target and not _MODEL_ID.fullmatch(target):
            raise ValueError(f"model_aliases: the target of {alias!r}, {target!r}, is not a model id")
    builtin = {k: v for k, v in DEFAULT_ALIASES.items() if k not in configured}
    return Aliases(builtin=builtin, configured={k: v for k, v in configured.items() if v})
