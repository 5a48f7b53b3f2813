"""Bedrock model ids, and which local model answers for each.

An application written for Bedrock names `anthropic.claude-3-haiku-20240307-v1:0` or
`amazon.titan-embed-text-v2:0`; Outcrop has neither, so by default the built-in chat model answers the chat
and text ids, and the built-in embedding model the embedding ids. The application then runs unchanged, and
the usage record, the bill and GetFoundationModel say which local model answered.

Two layers, both in `[model_aliases]` of outcrop.toml:
- **The table** (`DEFAULT_ALIASES`): exact ids, the ones applications name most; ListFoundationModels and
  `outcrop models list` show them. A configured exact id adds an entry or replaces one (an empty value
  removes it), and may alias a catalog id too (then the alias wins).
- **The patterns** (`DEFAULT_PATTERNS`): every other well-formed id of a Bedrock provider
  (`anthropic.claude-sonnet-4-5-20250929-v1:0`, `meta.llama4-scout-17b-instruct-v1:0`, `cohere.embed-v4:0`),
  so a model Bedrock adds next month works too: `*embed*` goes to the embedding model, Stability's and
  Amazon's image ids to the image model, video and speech ids nowhere, the rest to the chat model. The first
  pattern that matches wins. A configured key with `*` replaces the built-in pattern of the same key in
  place (`"*" = "local.big-v1:0"` changes the chat model, `"*" = ""` turns the catch-all off) or, when new,
  is tried before the built-in ones. A pattern starting with `*` applies to the ids of Bedrock's providers
  (`BEDROCK_PROVIDERS`) only; one naming a provider (`"acme.*"`) applies to that provider's ids.

Neither the built-in table nor any pattern shadows a model the catalog has (`meta.llama3-1-8b-instruct-v1:0`
is a hub model of the catalog): the catalog's card answers, with its own weights. When those weights are not
on this machine and cannot be fetched (offline), the model a pattern gives the id answers instead
(`profiles/service.py`, `InferenceProfiles.model`).

System inference profile ids are a geo prefix and a model id (`us.anthropic.claude-3-5-haiku-...`): they
resolve as the model id does (`profiles/service.py`), whatever the server's region.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass

from outcrop.catalog.service import Aliases

CHAT_MODEL = "huggingface.smollm2-135m-instruct-v1:0"
EMBEDDING_MODEL = "sentence-transformers.all-minilm-l6-v2-v1:0"

#: The chat and text models applications name most, all answered by the built-in chat model (and listed).
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
    "anthropic.claude-opus-4-1-20250805-v1:0",
    "anthropic.claude-sonnet-4-5-20250929-v1:0",
    "anthropic.claude-haiku-4-5-20251001-v1:0",
    "anthropic.claude-opus-4-5-20251101-v1:0",
    "amazon.nova-micro-v1:0",
    "amazon.nova-lite-v1:0",
    "amazon.nova-pro-v1:0",
    "amazon.nova-premier-v1:0",
    "amazon.nova-2-lite-v1:0",
    "amazon.titan-text-lite-v1",
    "amazon.titan-text-express-v1",
    "amazon.titan-text-premier-v1:0",
    "meta.llama3-8b-instruct-v1:0",
    "meta.llama3-70b-instruct-v1:0",
    "meta.llama3-1-70b-instruct-v1:0",
    "meta.llama3-2-3b-instruct-v1:0",
    "meta.llama3-2-11b-instruct-v1:0",
    "meta.llama3-2-90b-instruct-v1:0",
    "meta.llama3-3-70b-instruct-v1:0",
    "meta.llama4-scout-17b-instruct-v1:0",
    "meta.llama4-maverick-17b-instruct-v1:0",
    "mistral.mistral-small-2402-v1:0",
    "mistral.mistral-large-2402-v1:0",
    "mistral.mistral-large-2407-v1:0",
    "mistral.mixtral-8x7b-instruct-v0:1",
    "cohere.command-r-plus-v1:0",
    "ai21.jamba-1-5-large-v1:0",
    "deepseek.r1-v1:0",
    "openai.gpt-oss-20b-1:0",
    "openai.gpt-oss-120b-1:0",
)
#: The embedding models applications name most, answered by the built-in embedding model.
_EMBEDDING_IDS = (
    "amazon.titan-embed-text-v1",
    "amazon.titan-embed-text-v2:0",
    "amazon.titan-embed-g1-text-02",
    "cohere.embed-english-v3",
    "cohere.embed-multilingual-v3",
    "cohere.embed-v4:0",
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

#: Bedrock's model providers (the first part of their ids), by the name ListFoundationModels gives each. The
#: built-in patterns map the ids of these providers only; anything else (`acme.model-v1:0`) is no model.
BEDROCK_PROVIDERS: dict[str, str] = {
    "ai21": "AI21 Labs", "amazon": "Amazon", "anthropic": "Anthropic", "cohere": "Cohere", "deepseek": "DeepSeek",
    "google": "Google", "meta": "Meta", "minimax": "MiniMax", "mistral": "Mistral AI", "moonshot": "Moonshot AI",
    "moonshotai": "Moonshot AI", "nvidia": "NVIDIA", "openai": "OpenAI", "qwen": "Qwen", "stability": "Stability AI",
    "twelvelabs": "TwelveLabs", "writer": "Writer",
}
#: The ids no table names, by pattern: the first match wins; an empty target means "no model here" (Bedrock's
#: video and speech models, which nothing local can stand in for).
DEFAULT_PATTERNS: dict[str, str] = {
    "*rerank*": RERANK_MODEL,
    "amazon.titan-embed-image-*": MULTIMODAL_EMBEDDING_MODEL,
    "*embed*": EMBEDDING_MODEL,
    "stability.*": IMAGE_MODEL,
    "amazon.titan-image-*": IMAGE_MODEL,
    "amazon.nova-canvas-*": IMAGE_MODEL,
    "amazon.nova-reel-*": "",
    "amazon.nova-sonic-*": "",
    "*": CHAT_MODEL,
}

#: The geo prefixes of Bedrock's system inference profiles. Every one resolves in every region: a client
#: configured for eu-west-1 names `eu.` ids, one in Tokyo `apac.` or `jp.`, and all run here unchanged.
GLOBAL_GEO = "global"
GEO_PREFIXES = ("us", "eu", "apac", "us-gov", "jp", "au", "ca", GLOBAL_GEO)
#: A Bedrock model id: provider.name, optional version parts (the catalog's own ids have the same form).
_MODEL_ID = re.compile(r"[a-z0-9-]{1,63}\.[a-z0-9-]{1,63}(\.[a-z0-9-]{1,63})?(:[a-z0-9-]{1,63}){0,2}")
#: A configured pattern: id characters and at least one `*`.
_PATTERN = re.compile(r"[a-z0-9.:*-]{1,140}")


@dataclass(frozen=True)
class PatternMap:
    """The local model a Bedrock id names by pattern (`Aliases.pattern`): None for a malformed id, an id of no
    Bedrock provider, or one whose first matching pattern maps to nothing."""

    patterns: tuple[tuple[str, str], ...]

    def __call__(self, model_id: str) -> str | None:
        if not _MODEL_ID.fullmatch(model_id):
            return None
        known = model_id.split(".", 1)[0] in BEDROCK_PROVIDERS
        for pattern, target in self.patterns:
            if (known or not pattern.startswith("*")) and fnmatch.fnmatchcase(model_id, pattern):
                return target or None
        return None


def geo_prefix(region: str) -> str:
    """The geo prefix of the system profiles Bedrock lists in `region` (us-east-1 -> us)."""
    if region.startswith("us-gov-"):
        return "us-gov"
    return {"us": "us", "eu": "eu", "ap": "apac"}.get(region.split("-", 1)[0], "us")


def system_profile_model(identifier: str) -> str | None:
    """The model id a system inference profile id names (`us.amazon.nova-micro-v1:0` -> `amazon.nova-micro-v1:0`),
    or None when the identifier has no geo prefix."""
    geo, _, rest = identifier.partition(".")
    return rest if geo in GEO_PREFIXES and "." in rest else None


def model_aliases(configured: Mapping[str, str] | None = None) -> Aliases:
    """The built-in table and patterns and the configured entries, checked (a ValueError names the bad entry)."""
    configured = dict(configured or {})
    for alias, target in configured.items():
        if not isinstance(alias, str) or not isinstance(target, str):
            raise ValueError(f"model_aliases: {alias!r} = {target!r} must map a model id to a model id "
                             "(quote the key in outcrop.toml: \"anthropic.claude-3-haiku-20240307-v1:0\" = \"...\")")
        if "*" in alias:
            if not _PATTERN.fullmatch(alias):
                raise ValueError(f"model_aliases: {alias!r} is not a model id pattern (anthropic.*, *embed*, *)")
        elif not _MODEL_ID.fullmatch(alias):
            raise ValueError(f"model_aliases: {alias!r} is not a Bedrock model id (provider.name-v1:0)")
        if system_profile_model(alias) is not None:
            raise ValueError(f"model_aliases: {alias!r} starts with a geo prefix; alias the model id "
                             f"{system_profile_model(alias)!r} and its system profiles follow")
        if target and not _MODEL_ID.fullmatch(target):
            raise ValueError(f"model_aliases: the target of {alias!r}, {target!r}, is not a model id")
    exact = {k: v for k, v in configured.items() if "*" not in k}
    patterns = {k: v for k, v in configured.items() if "*" in k}
    # An id removed by an empty value is no model, whatever the patterns say; a new pattern goes next; one
    # replacing a built-in keeps the built-in's place (so `"*" = ...` stays last).
    ordered = {**{k: "" for k, v in exact.items() if not v},
               **{k: v for k, v in patterns.items() if k not in DEFAULT_PATTERNS},
               **{k: patterns.get(k, v) for k, v in DEFAULT_PATTERNS.items()}}
    builtin = {k: v for k, v in DEFAULT_ALIASES.items() if k not in exact}
    return Aliases(builtin=builtin, configured={k: v for k, v in exact.items() if v},
                   pattern=PatternMap(tuple(ordered.items())), providers=BEDROCK_PROVIDERS)
