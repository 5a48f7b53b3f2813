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
