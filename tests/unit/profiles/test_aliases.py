"""The well-known Bedrock ids: which local model answers each, and how outcrop.toml changes that."""

from __future__ import annotations

import json

import pytest

from outcrop.catalog.cards import builtin_cards
from outcrop.catalog.service import SERVED_BY_MEMBER, Aliases, Catalog
from outcrop.errors import ResourceNotFoundException
from outcrop.platform.config import load_settings
from outcrop.profiles.aliases import (
    CHAT_MODEL,
    DEFAULT_ALIASES,
    EMBEDDING_MODEL,
    IMAGE_MODEL,
    MULTIMODAL_EMBEDDING_MODEL,
    RERANK_MODEL,
    geo_prefix,
    model_aliases,
    system_profile_model,
)

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
LLAMA_8B = "meta.llama3-1-8b-instruct-v1:0"  # a hub model of the catalog


def test_defaults_name_the_builtin_models_and_never_a_catalog_id():
    catalog_ids = {c.model_id for c in builtin_cards()}
    assert not set(DEFAULT_ALIASES) & catalog_ids
    assert set(DEFAULT_ALIASES.values()) <= catalog_ids  # every default names a model the catalog has
    assert {CHAT_MODEL, EMBEDDING_MODEL, RERANK_MODEL, MULTIMODAL_EMBEDDING_MODEL} <= set(DEFAULT_ALIASES.values())
    assert DEFAULT_ALIASES["amazon.titan-embed-image-v1"] == MULTIMODAL_EMBEDDING_MODEL
    assert DEFAULT_ALIASES["amazon.rerank-v1:0"] == DEFAULT_ALIASES["cohere.rerank-v3-5:0"] == RERANK_MODEL
    for chat in (CLAUDE, "anthropic.claude-3-5-haiku-20241022-v1:0", "amazon.nova-micro-v1:0",
                 "meta.llama3-8b-instruct-v1:0", "mistral.mistral-large-2402-v1:0", "amazon.titan-text-express-v1"):
        assert DEFAULT_ALIASES[chat] == CHAT_MODEL
    for embedding in ("amazon.titan-embed-text-v2:0", "amazon.titan-embed-text-v1", "cohere.embed-english-v3",
                      "cohere.embed-multilingual-v3"):
        assert DEFAULT_ALIASES[embedding] == EMBEDDING_MODEL


def test_an_alias_answers_with_its_local_models_card_under_its_own_id(db):
    catalog = Catalog(db, "us-east-1", model_aliases())
    card = catalog.get(CLAUDE)
    local = catalog.get(CHAT_MODEL)
    assert (card.model_id, card.served_by, card.served_model_id) == (CLAUDE, CHAT_MODEL, CHAT_MODEL)
    assert card.native_format == local.native_format and card.source == local.source
    assert card.arn("us-east-1") == f"arn:aws:bedrock:us-east-1::foundation-model/{CLAUDE}"
    assert catalog.get(card.arn("us-east-1")) == card  # by ARN too
    described = catalog.describe([card])[0]
    assert described["modelId"] == CLAUDE and described[SERVED_BY_MEMBER] == CHAT_MODEL
    assert SERVED_BY_MEMBER not in catalog.describe([local])[0]
    assert local.served_by == "" and local.served_model_id == CHAT_MODEL
    assert card.provider == "Anthropic" and local.provider == "Hugging Face"


def test_the_table_is_listed_and_filterable_and_patterns_are_not(db):
    """ListFoundationModels lists the table's aliases after the catalog (an application may find its id by
    listing), each marked with its local model; the ids mapped by pattern are endless, so they resolve only."""
    catalog = Catalog(db, "us-east-1", model_aliases())
    anthropic = catalog.describe(catalog.list_models(provider="Anthropic"))
    assert CLAUDE in {m["modelId"] for m in anthropic} and len(anthropic) >= 10
    assert {(m["providerName"], m[SERVED_BY_MEMBER]) for m in anthropic} == {("Anthropic", CHAT_MODEL)}
    listed = {m.model_id: m for m in catalog.list_models()}
    assert CHAT_MODEL in listed and listed[CHAT_MODEL].served_by == ""
    assert {m.model_id for m in catalog.list_models(output_modality="EMBEDDING")} >= \
        {EMBEDDING_MODEL, "amazon.titan-embed-text-v2:0", "cohere.embed-v4:0"}
    assert "anthropic.claude-opus-4-9-v1:0" not in listed
    assert catalog.get("anthropic.claude-opus-4-9-v1:0").served_by == CHAT_MODEL


def test_a_catalog_model_wins_over_a_builtin_alias_and_loses_to_a_configured_one(db):
    builtin = Catalog(db, "us-east-1", Aliases(builtin={LLAMA_8B: CHAT_MODEL}))
    assert builtin.get(LLAMA_8B).served_by == ""
    assert LLAMA_8B not in builtin.alias_table()
    assert model_aliases().by_pattern(LLAMA_8B) == CHAT_MODEL  # mapped, yet the card answers
    assert Catalog(db, "us-east-1", model_aliases()).get(LLAMA_8B).served_by == ""
    configured = Catalog(db, "us-east-1", model_aliases({LLAMA_8B: CHAT_MODEL}))
    assert configured.get(LLAMA_8B).served_by == CHAT_MODEL
    assert configured.alias_table()[LLAMA_8B] == CHAT_MODEL


def test_configuration_adds_replaces_and_removes_entries(db):
    aliases = model_aliases({CLAUDE: "", "amazon.nova-micro-v1:0": EMBEDDING_MODEL, "acme.big-v1:0": CHAT_MODEL})
    catalog = Catalog(db, "us-east-1", aliases)
    table = catalog.alias_table()
    assert CLAUDE not in table and table["acme.big-v1:0"] == CHAT_MODEL
    assert table["amazon.nova-micro-v1:0"] == EMBEDDING_MODEL
    with pytest.raises(ResourceNotFoundException):
        catalog.get(CLAUDE)  # removed: no pattern brings it back
    assert list(table) == sorted(table)


def test_ids_of_bedrock_providers_are_mapped_by_pattern_and_others_name_no_model(db):
    catalog = Catalog(db, "us-east-1", model_aliases())
    for model_id, served in {
            "anthropic.claude-sonnet-4-5-20250929-v1:0": CHAT_MODEL,  # in the table
            "anthropic.claude-opus-4-9-20270101-v1:0": CHAT_MODEL,  # not yet on Bedrock: the pattern
            "deepseek.v3.2": CHAT_MODEL, "qwen.qwen3-32b-v1:0": CHAT_MODEL, "writer.palmyra-x5-v1:0": CHAT_MODEL,
            "cohere.embed-v4:0": EMBEDDING_MODEL, "amazon.nova-2-multimodal-embeddings-v1:0": EMBEDDING_MODEL,
            "amazon.titan-embed-image-v2:0": MULTIMODAL_EMBEDDING_MODEL, "amazon.rerank-v2:0": RERANK_MODEL,
            "stability.stable-image-core-v2:0": IMAGE_MODEL, "amazon.titan-image-generator-v3:0": IMAGE_MODEL,
    }.items():
        assert catalog.get(model_id).served_by == served, model_id
    for model_id in ("acme.claude-v1:0", "amazon.nova-reel-v1:1", "amazon.nova-sonic-v1:0", "Anthropic.Claude-v2",
                     "anthropic", "anthropic.", "us.anthropic.claude-v2", "anthropic.claude v2"):
        with pytest.raises(ResourceNotFoundException):
            catalog.get(model_id)


def test_patterns_are_configured_like_entries(db):
    aliases = model_aliases({"*": EMBEDDING_MODEL, "*embed*": "", "acme.*": CHAT_MODEL, "meta.*": EMBEDDING_MODEL})
    catalog = Catalog(db, "us-east-1", aliases)
    assert catalog.get("anthropic.claude-opus-4-9-v1:0").served_by == EMBEDDING_MODEL  # the catch-all replaced
    assert catalog.get("amazon.rerank-v2:0").served_by == RERANK_MODEL  # the built-in patterns before it stay
    with pytest.raises(ResourceNotFoundException):
        catalog.get("cohere.embed-v5:0")  # an empty value: these ids name no model
    assert catalog.get("acme.anything-v1:0").served_by == CHAT_MODEL  # a pattern naming its provider
    assert catalog.get("meta.llama9-v1:0").served_by == EMBEDDING_MODEL  # a new pattern goes first
    assert catalog.get(CLAUDE).served_by == CHAT_MODEL  # the table still wins over patterns
    assert catalog.get(LLAMA_8B).served_by == ""  # and no pattern shadows a catalog model
    with pytest.raises(ValueError, match="pattern"):
        model_aliases({"anthropic.*/x": CHAT_MODEL})


def test_an_alias_of_a_model_not_in_the_catalog_is_not_found(db):
    catalog = Catalog(db, "us-east-1", model_aliases({"acme.big-v1:0": "local.gone-v1:0"}))
    with pytest.raises(ResourceNotFoundException, match="alias of local.gone-v1:0"):
        catalog.get("acme.big-v1:0")


@pytest.mark.parametrize(("entry", "message"), [
    ({"us.anthropic.claude-v2": CHAT_MODEL}, "geo prefix"),
    ({"Not An Id": CHAT_MODEL}, "not a Bedrock model id"),
    ({CLAUDE: "no spaces allowed"}, "not a model id"),
    ({CLAUDE: {"nested": "table"}}, "quote the key"),
])
def test_bad_entries_are_named(entry, message):
    with pytest.raises(ValueError, match=message):
        model_aliases(entry)


def test_system_profile_ids_and_geographies():
    assert system_profile_model("us." + CLAUDE) == CLAUDE
    assert system_profile_model("global.amazon.nova-micro-v1:0") == "amazon.nova-micro-v1:0"
    assert system_profile_model("apac." + CLAUDE) == CLAUDE and system_profile_model("eu." + CLAUDE) == CLAUDE
    for geo in ("us-gov", "jp", "au", "ca"):
        assert system_profile_model(f"{geo}.{CLAUDE}") == CLAUDE
    assert system_profile_model(CLAUDE) is None and system_profile_model("us.nothing") is None
    assert system_profile_model("xx." + CLAUDE) is None
    assert (geo_prefix("us-east-1"), geo_prefix("eu-west-1"), geo_prefix("ap-northeast-1")) == ("us", "eu", "apac")
    assert geo_prefix("us-gov-west-1") == "us-gov"


def test_settings_read_a_toml_table_and_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("OUTCROP_MODEL_ALIASES", raising=False)
    monkeypatch.delenv("OUTCROP_CONFIG", raising=False)
    assert load_settings(data_dir=tmp_path).model_aliases == {}
    (tmp_path / "outcrop.toml").write_text(f'[model_aliases]\n"{CLAUDE}" = "local.tiny-v1:0"\n'
                                           f'"amazon.nova-pro-v1:0" = ""\n')
    assert load_settings(data_dir=tmp_path).model_aliases == {CLAUDE: "local.tiny-v1:0", "amazon.nova-pro-v1:0": ""}
    monkeypatch.setenv("OUTCROP_MODEL_ALIASES", json.dumps({CLAUDE: CHAT_MODEL}))
    assert load_settings(data_dir=tmp_path).model_aliases == {CLAUDE: CHAT_MODEL}
    monkeypatch.setenv("OUTCROP_MODEL_ALIASES", f"{CLAUDE}={CHAT_MODEL}, acme.x-v1:0 = {EMBEDDING_MODEL}")
    assert load_settings(data_dir=tmp_path).model_aliases == {CLAUDE: CHAT_MODEL, "acme.x-v1:0": EMBEDDING_MODEL}
    monkeypatch.setenv("OUTCROP_MODEL_ALIASES", "no pairs here")
    with pytest.raises(ValueError, match="key=value"):
        load_settings(data_dir=tmp_path)
    monkeypatch.delenv("OUTCROP_MODEL_ALIASES")
    (tmp_path / "outcrop.toml").write_text('[model_aliases]\nanthropic.claude = "x.y"\n')  # unquoted: a nested table
    with pytest.raises(ValueError, match="quote keys"):
        load_settings(data_dir=tmp_path)
