"""The runtime's model resolution: aliases and profiles reach the local model; a name that reaches nothing is
Bedrock's ValidationException, not a 404."""

from __future__ import annotations

import pytest

from outcrop.catalog.service import Catalog
from outcrop.errors import ValidationException
from outcrop.profiles.aliases import CHAT_MODEL, model_aliases
from outcrop.profiles.service import InferenceProfiles
from outcrop.runtime.service import INVALID_MODEL_IDENTIFIER, RuntimeService

A = "111111111111"
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"


def runtime(db, aliases=None) -> RuntimeService:
    catalog = Catalog(db, "us-east-1", model_aliases(aliases))
    return RuntimeService(catalog, None, db, None, None, "us-east-1", None,
                          InferenceProfiles(db, catalog, "us-east-1"))


def test_an_alias_is_served_by_its_local_models_weights(db):
    service = runtime(db)
    served, capacity = service.target(A, CLAUDE)
    local, _ = service.target(A, CHAT_MODEL)
    assert capacity is None and served.model_arn == CLAUDE
    assert (served.card.model_id, served.card.served_by) == (CLAUDE, CHAT_MODEL)
    assert served.weights == local.weights
    assert service.target(A, f"us.{CLAUDE}")[0].weights == local.weights
    assert service.profiles.served_model_id(A, f"us.{CLAUDE}") == CHAT_MODEL


@pytest.mark.parametrize("name", ["sonnet", "acme.no-such-v1:0", "us.acme.no-such-v1:0",
                                  "arn:aws:bedrock:us-east-1::foundation-model/acme.no-such-v1:0",
                                  f"arn:aws:bedrock:us-east-1:{A}:application-inference-profile/abcdefabcdef"])
def test_a_name_that_reaches_nothing_is_an_invalid_identifier(db, name):
    with pytest.raises(ValidationException) as caught:
        runtime(db).target(A, name)
    assert caught.value.message == INVALID_MODEL_IDENTIFIER


def test_an_alias_of_a_missing_model_says_so(db):
    with pytest.raises(ValidationException, match="alias of local.gone-v1:0"):
        runtime(db, {"acme.big-v1:0": "local.gone-v1:0"}).target(A, "acme.big-v1:0")


#: A copy of LlamaIndex's list (llama_index.llms.bedrock_converse.utils.BEDROCK_MODELS) for when it is not
#: installed: the ids a framework accepts are the ids its users write.
FRAMEWORK_IDS = (
    "ai21.j2-mid-v1", "ai21.jamba-1-5-mini-v1:0", "amazon.nova-2-lite-v1:0", "amazon.nova-premier-v1:0",
    "amazon.nova-pro-v1:0", "amazon.titan-text-premier-v1:0", "anthropic.claude-3-5-sonnet-20241022-v2:0",
    "anthropic.claude-haiku-4-5-20251001-v1:0", "anthropic.claude-opus-4-1-20250805-v1:0",
    "anthropic.claude-opus-4-5-20251101-v1:0", "anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic.claude-v2:1",
    "cohere.command-light-text-v14", "cohere.command-r-v1:0", "deepseek.r1-v1:0", "deepseek.v3.2",
    "google.gemma-3-12b-it", "meta.llama2-13b-chat-v1", "meta.llama3-1-8b-instruct-v1:0",
    "meta.llama3-2-11b-instruct-v1:0", "meta.llama3-2-1b-instruct-v1:0", "meta.llama3-2-90b-instruct-v1:0",
    "meta.llama4-maverick-17b-instruct-v1:0", "meta.llama4-scout-17b-instruct-v1:0", "mistral.mistral-7b-instruct-v0:2",
    "mistral.mistral-large-2407-v1:0", "openai.gpt-oss-120b-1:0", "openai.gpt-oss-20b-1:0",
)
#: The catalog's hub models with a Bedrock provider's id, which the chat model stands in for when offline.
CATALOG_IDS = ("google.gemma-3-1b-it-v1:0", "qwen.qwen2-5-0-5b-instruct-v1:0", "ai21.jamba-1-5-mini-v1:0")
#: The embedding ids LlamaIndex's and LangChain's Bedrock embeddings send.
EMBEDDING_IDS = ("amazon.titan-embed-text-v1", "amazon.titan-embed-text-v2:0", "amazon.titan-embed-g1-text-02",
                 "cohere.embed-english-v3", "cohere.embed-multilingual-v3", "cohere.embed-v4:0")


def framework_ids() -> tuple[str, ...]:
    try:
        from llama_index.llms.bedrock_converse.utils import BEDROCK_MODELS
    except ImportError:
        return FRAMEWORK_IDS
    return tuple(BEDROCK_MODELS)


def test_every_id_a_framework_accepts_reaches_weights_on_this_machine(db):
    """What CountTokens, Converse and InvokeModel resolve: every id LlamaIndex's BedrockConverse accepts reaches
    weights here, a catalog model's own when they are on this machine, else the chat model's (as offline in
    CI: the catalog's hub models are not downloaded)."""
    service = runtime(db)
    chat = service.target(A, CHAT_MODEL)[0].weights
    for model_id in (*framework_ids(), *CATALOG_IDS):
        for name in (model_id, f"us.{model_id}", f"eu.{model_id}"):
            served, _ = service.target(A, name)
            assert served.weights.exists(), name
            assert served.card.served_by in ("", CHAT_MODEL) and "TEXT" in served.card.output_modalities, name
            assert served.card.served_by == "" or served.weights == chat, name
    for model_id in EMBEDDING_IDS:
        assert "EMBEDDING" in service.target(A, model_id)[0].card.output_modalities, model_id
