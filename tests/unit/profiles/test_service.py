"""Inference profiles as the service sees them: application profiles per account, system profiles, and what
every model name resolves to for the runtime, the bill and IAM."""

from __future__ import annotations

import pytest

from outcrop.catalog.service import Catalog
from outcrop.errors import (
    ConflictException,
    ResourceNotFoundException,
    TooManyTagsException,
    ValidationException,
)
from outcrop.profiles.aliases import CHAT_MODEL, EMBEDDING_MODEL, model_aliases
from outcrop.profiles.service import InferenceProfiles

A, B = "111111111111", "222222222222"
REGION = "us-east-1"
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
CLAUDE_ARN = f"arn:aws:bedrock:{REGION}::foundation-model/{CLAUDE}"
CHAT_ARN = f"arn:aws:bedrock:{REGION}::foundation-model/{CHAT_MODEL}"


@pytest.fixture
def profiles(db) -> InferenceProfiles:
    return InferenceProfiles(db, Catalog(db, REGION, model_aliases()), REGION)


def create(profiles, account=A, name="support", source=CLAUDE_ARN, **extra) -> str:
    return profiles.create(account, {"inferenceProfileName": name, "modelSource": {"copyFrom": source},
                                     **extra})["inferenceProfileArn"]


def test_create_get_list_delete(profiles):
    arn = create(profiles, description="the support bot", tags=[{"key": "team", "value": "support"}])
    profile_id = arn.rsplit("/", 1)[1]
    assert arn == f"arn:aws:bedrock:{REGION}:{A}:application-inference-profile/{profile_id}" and len(profile_id) == 12
    got = profiles.get(A, arn)
    assert got == profiles.get(A, profile_id)
    assert (got["inferenceProfileName"], got["description"], got["type"], got["status"]) == \
        ("support", "the support bot", "APPLICATION", "ACTIVE")
    assert got["models"] == [{"modelArn": CLAUDE_ARN}] and got["outcropModelId"] == CHAT_MODEL
    assert got["createdAt"] and got["updatedAt"]
    listed = profiles.list(A, {"typeEquals": "APPLICATION"})["inferenceProfileSummaries"]
    assert [p["inferenceProfileArn"] for p in listed] == [arn]
    assert profiles.tags(A, arn) == [{"key": "team", "value": "support"}]
    profiles.delete(A, profile_id)
    with pytest.raises(ResourceNotFoundException):
        profiles.get(A, arn)
    assert profiles.list(A, {"typeEquals": "APPLICATION"})["inferenceProfileSummaries"] == []
    create(profiles)  # the name is free again


def test_names_are_unique_per_account_and_copyFrom_must_name_a_model(profiles):
    create(profiles)
    with pytest.raises(ConflictException):
        create(profiles)
    create(profiles, account=B)  # another account's namespace
    with pytest.raises(ResourceNotFoundException):
        create(profiles, name="x", source=f"arn:aws:bedrock:{REGION}::foundation-model/acme.nothing-v1:0")
    with pytest.raises(ValidationException):
        create(profiles, name="x", source=f"arn:aws:bedrock:eu-west-1::foundation-model/{CLAUDE}")


def test_a_profile_copying_a_system_profile_serves_its_model(profiles):
    arn = create(profiles, source=f"arn:aws:bedrock:{REGION}:{A}:inference-profile/us.{CLAUDE}")
    assert profiles.get(A, arn)["models"] == [{"modelArn": CLAUDE_ARN}]
    assert profiles.model(A, arn).served_model_id == CHAT_MODEL


def test_another_account_neither_sees_nor_uses_nor_tags_a_profile(profiles):
    arn = create(profiles)
    profile_id = arn.rsplit("/", 1)[1]
    for call in (lambda: profiles.get(B, arn), lambda: profiles.get(B, profile_id),
                 lambda: profiles.delete(B, arn), lambda: profiles.model(B, arn), lambda: profiles.tags(B, arn),
                 lambda: profiles.tag(B, arn, [{"key": "k", "value": "v"}])):
        with pytest.raises(ResourceNotFoundException):
            call()
    assert profiles.list(B, {"typeEquals": "APPLICATION"})["inferenceProfileSummaries"] == []
    assert profiles.served_model_id(B, arn) == arn  # nothing resolved for B


def test_resolution_of_every_kind_of_name(profiles):
    arn = create(profiles)
    cases = {CLAUDE: CHAT_MODEL, CLAUDE_ARN: CHAT_MODEL, f"us.{CLAUDE}": CHAT_MODEL, f"global.{CLAUDE}": CHAT_MODEL,
             f"arn:aws:bedrock:{REGION}:{A}:inference-profile/us.{CLAUDE}": CHAT_MODEL, arn: CHAT_MODEL,
             arn.rsplit("/", 1)[1]: CHAT_MODEL, "amazon.titan-embed-text-v2:0": EMBEDDING_MODEL,
             CHAT_MODEL: CHAT_MODEL, f"eu.{CLAUDE}": CHAT_MODEL, "apac.anthropic.claude-sonnet-4-5-20250929-v1:0":
             CHAT_MODEL, f"arn:aws:bedrock:{REGION}:{A}:inference-profile/jp.{CLAUDE}": CHAT_MODEL}
    for name, served in cases.items():
        assert profiles.model(A, name).served_model_id == served, name
        assert profiles.served_model_id(A, name) == served, name
    for unknown in ("sonnet", "acme.nothing-v1:0", "us.acme.nothing-v1:0", f"xx.{CLAUDE}",
                    f"arn:aws:bedrock:{REGION}:{B}:inference-profile/us.{CLAUDE}",
                    f"arn:aws:bedrock:{REGION}:{A}:application-inference-profile/aaaaaaaaaaaa"):
        with pytest.raises(ResourceNotFoundException):
            profiles.model(A, unknown)
    provisioned = f"arn:aws:bedrock:{REGION}:{A}:provisioned-model/abcdefabcdef"
    assert profiles.served_model_id(A, provisioned) == provisioned  # billed by its own ARN


def test_a_deleted_profile_still_names_its_model_for_the_usage_record(profiles):
    arn = create(profiles)
    profiles.delete(A, arn)
    with pytest.raises(ResourceNotFoundException):
        profiles.model(A, arn)
    assert profiles.served_model_id(A, arn) == CHAT_MODEL


def test_iam_sees_every_arn_on_the_way_to_the_model(profiles):
    arn = create(profiles)
    assert profiles.authorization_arns(A, arn) == [arn, CLAUDE_ARN, CHAT_ARN]
    assert profiles.authorization_arns(A, CLAUDE) == [CLAUDE_ARN, CHAT_ARN]
    assert profiles.authorization_arns(A, CLAUDE_ARN) == [CLAUDE_ARN, CHAT_ARN]
    system = f"arn:aws:bedrock:{REGION}:{A}:inference-profile/us.{CLAUDE}"
    assert profiles.authorization_arns(A, f"us.{CLAUDE}") == [system, CLAUDE_ARN, CHAT_ARN]
    assert profiles.authorization_arns(A, CHAT_MODEL) == [CHAT_ARN]
    # Another account's profile: IAM still sees its canonical ARN; nothing behind it.
    assert profiles.authorization_arns(B, arn) == [arn]
    assert profiles.authorization_arns(A, "my-custom-model") is None
    assert profiles.profile_arn(A, f"us.{CLAUDE}") == system
    assert profiles.profile_arn(A, "abcdefabcdef") == f"arn:aws:bedrock:{REGION}:{A}:application-inference-profile/" \
                                                       "abcdefabcdef"


def test_system_profiles_are_listed_by_default_and_paged(profiles):
    create(profiles)
    everything = profiles.list(A, {})
    ids = [p["inferenceProfileId"] for p in everything["inferenceProfileSummaries"]]
    assert everything["nextToken"] is None and f"us.{CLAUDE}" in ids and ids == sorted(ids)
    assert all(i.startswith("us.") for i in ids)
    assert {p["type"] for p in everything["inferenceProfileSummaries"]} == {"SYSTEM_DEFINED"}
    first = profiles.list(A, {"typeEquals": "SYSTEM_DEFINED", "maxResults": 5})
    second = profiles.list(A, {"typeEquals": "SYSTEM_DEFINED", "maxResults": 5, "nextToken": first["nextToken"]})
    paged = [p["inferenceProfileId"] for p in first["inferenceProfileSummaries"] + second["inferenceProfileSummaries"]]
    assert paged == ids[:10]
    token = first["nextToken"]
    assert f"us.{CLAUDE}" not in token and not token.startswith("system:")  # opaque, signed
    body, mac = token.split(".")
    for forged in ("made-up", "system:us.amazon.nova-canvas-v1:0", f"{body[:-2]}xx.{mac}", f"{body}.{mac[:-2]}xx"):
        with pytest.raises(ValidationException, match="not a token this server gave out"):
            profiles.list(A, {"typeEquals": "SYSTEM_DEFINED", "maxResults": 5, "nextToken": forged})
    with pytest.raises(ValidationException, match="other filters"):  # a token is for the request it paged
        profiles.list(A, {"maxResults": 5, "nextToken": token})
    system = profiles.get(A, f"us.{CLAUDE}")
    assert system["inferenceProfileArn"] == f"arn:aws:bedrock:{REGION}:{A}:inference-profile/us.{CLAUDE}"
    assert system["models"] == [{"modelArn": CLAUDE_ARN}] and system["type"] == "SYSTEM_DEFINED"
    assert profiles.get(A, system["inferenceProfileArn"]) == system
    with pytest.raises(ValidationException):
        profiles.delete(A, f"us.{CLAUDE}")
    with pytest.raises(ResourceNotFoundException):
        profiles.get(A, "us.acme.nothing-v1:0")


def test_tags(profiles):
    arn = create(profiles)
    profiles.tag(A, arn, [{"key": "team", "value": "a"}, {"key": "cost", "value": "1"}])
    profiles.tag(A, arn, [{"key": "team", "value": "b"}])
    assert profiles.tags(A, arn) == [{"key": "cost", "value": "1"}, {"key": "team", "value": "b"}]
    profiles.untag(A, arn, ["cost", "absent"])
    assert profiles.tags(A, arn) == [{"key": "team", "value": "b"}]
    with pytest.raises(ValidationException, match="aws:"):
        profiles.tag(A, arn, [{"key": "aws:owner", "value": "x"}])
    with pytest.raises(TooManyTagsException):
        profiles.tag(A, arn, [{"key": f"k{i}", "value": ""} for i in range(200)])
    with pytest.raises(ValidationException):
        profiles.tags(A, f"arn:aws:bedrock:{REGION}:{A}:inference-profile/us.{CLAUDE}")


def test_every_geography_resolves_in_every_region(db):
    """A client configured for eu-west-1 names `eu.` ids, one in Tokyo `apac.` or `jp.`: whatever region the
    server says it is in, they all resolve, and GetInferenceProfile answers them."""
    for region in ("us-east-1", "eu-west-1"):
        profiles = InferenceProfiles(db, Catalog(db, region, model_aliases()), region)
        for geo in ("us", "eu", "apac", "us-gov", "jp", "au", "ca", "global"):
            assert profiles.model(A, f"{geo}.{CLAUDE}").served_model_id == CHAT_MODEL, (region, geo)
            got = profiles.get(A, f"{geo}.{CLAUDE}")
            assert got["inferenceProfileArn"] == f"arn:aws:bedrock:{region}:{A}:inference-profile/{geo}.{CLAUDE}"
    listed = profiles.list(A, {})["inferenceProfileSummaries"]
    assert listed and all(p["inferenceProfileId"].startswith("eu.") for p in listed)  # the region's own


LLAMA_8B = "meta.llama3-1-8b-instruct-v1:0"  # a hub model of the catalog, never downloaded in tests
CLIP = "openai.clip-vit-base-patch32-v1:0"  # a hub model too, mapped by pattern to the chat model


def test_a_catalog_model_that_cannot_be_had_here_is_answered_by_its_mapped_model(profiles, monkeypatch):
    if profiles.catalog.weights_path(profiles.catalog.get(LLAMA_8B)) is not None:
        pytest.skip(f"{LLAMA_8B}'s weights are on this machine")
    # Offline (the tests' HF_HUB_OFFLINE): the chat model stands in, and says so.
    card = profiles.model(A, LLAMA_8B)
    assert (card.model_id, card.served_by, card.provider) == (LLAMA_8B, CHAT_MODEL, "Meta")
    assert profiles.model(A, f"eu.{LLAMA_8B}").served_model_id == CHAT_MODEL
    assert profiles.served_model_id(A, LLAMA_8B) == CHAT_MODEL
    assert profiles.authorization_arns(A, LLAMA_8B)[-1] == CHAT_ARN  # IAM sees the model that answers
    assert profiles.model(A, CLIP).served_by == ""  # the pattern's model does not embed images: no stand-in
    # Online, a hub that would hand the weights out keeps the card (it fetches them on first use as before);
    # one that refuses (no network, a gated repository) is asked once in a while, not once a request.
    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: False)
    asked = []
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lambda url, timeout: asked.append(url))
    assert profiles.model(A, LLAMA_8B).served_by == ""
    profiles._probes.clear()

    def refuse(url, timeout):
        asked.append(url)
        raise OSError("no network")
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", refuse)
    assert profiles.model(A, LLAMA_8B).served_by == profiles.model(A, LLAMA_8B).served_by == CHAT_MODEL
    assert len(asked) == 2 and asked[-1].endswith("config.json")
