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
             CHAT_MODEL: CHAT_MODEL}
    for name, served in cases.items():
        assert profiles.model(A, name).served_model_id == served, name
        assert profiles.served_model_id(A, name) == served, name
    for unknown in ("sonnet", "acme.nothing-v1:0", "us.acme.nothing-v1:0", f"eu.{CLAUDE}",
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
    with pytest.raises(ValidationException):
        profiles.list(A, {"nextToken": "made-up"})
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


def test_a_system_profile_of_another_geography_is_not_offered_here(profiles):
    for identifier in (f"eu.{CLAUDE}", f"apac.{CLAUDE}"):
        with pytest.raises(ResourceNotFoundException, match="not offered in us-east-1"):
            profiles.model(A, identifier)
    assert profiles.model(A, f"global.{CLAUDE}").served_model_id == CHAT_MODEL
