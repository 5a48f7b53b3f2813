"""Imported models by ARN: the runtime's lookup, their card, their price, and what CreateModelImportJob refuses
before it looks at any folder."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from outcrop.catalog.prices import PriceTable
from outcrop.errors import ResourceNotFoundException, ValidationException
from outcrop.iam.principal import Principal
from outcrop.model_import import models
from outcrop.model_import.service import ModelImports, required_permissions, source_folder
from outcrop.model_import.tables import ImportedModelRow
from outcrop.platform.database import utc_now
from outcrop.platform.objectstore import S3Uri

REGION, ACCOUNT, OTHER = "us-east-1", "111122223333", "444455556666"
ARN = models.imported_model_arn(REGION, ACCOUNT, "abcdefgh1234")


@pytest.fixture
def imported(db):
    with db.session() as session:
        session.add(ImportedModelRow(
            model_arn=ARN, account_id=ACCOUNT, model_name="my-llama", job_arn="arn:job", job_name="job",
            s3_uri="s3://b/m/", architecture="llama", native_format="meta-llama", instruct_supported=True,
            context_length=256, size_bytes=10, weights_path="/data/imported-models/x", created_at=utc_now()))
    return models.ImportedModels(db, REGION)


def test_the_arn_is_bedrocks():
    assert ARN == "arn:aws:bedrock:us-east-1:111122223333:imported-model/abcdefgh1234"
    assert models.is_imported_model_arn(ARN)
    assert not models.is_imported_model_arn("arn:aws:bedrock:us-east-1:111122223333:custom-model/x/abcdefgh1234")


def test_an_imported_model_is_found_by_arn_or_name_in_its_own_account_only(imported):
    assert imported.row(ACCOUNT, ARN).model_name == "my-llama"
    assert imported.row(ACCOUNT, "my-llama").model_arn == ARN
    assert imported.row(ACCOUNT, quote(ARN, safe="")).model_arn == ARN  # percent-encoded, as a path carries it
    for account, identifier in ((OTHER, ARN), (OTHER, "my-llama"), (ACCOUNT, ARN[:-1] + "9"), (ACCOUNT, "other"),
                                (ACCOUNT, ARN.replace("imported-model", "custom-model"))):
        with pytest.raises(ResourceNotFoundException):
            imported.row(account, identifier)
    with pytest.raises(ValidationException, match="region"):  # another region's ARN is refused, not looked up
        imported.row(ACCOUNT, ARN.replace(REGION, "eu-west-1"))


def test_it_is_served_as_an_on_demand_text_model_named_by_its_arn(imported):
    served = imported.served_model(ACCOUNT, ARN)
    assert served.model_arn == ARN and str(served.weights) == "/data/imported-models/x" and served.base is None
    card = served.card
    assert card.model_id == card.served_model_id == ARN  # what usage records and the bill name
    assert card.native_format == "meta-llama" and card.streaming and card.output_modalities == ("TEXT",)
    assert card.inference_types == ("ON_DEMAND",) and card.context_length == 256


def test_imported_models_are_priced_by_the_token_from_their_own_table(tmp_path):
    prices = PriceTable.load()
    assert prices.on_demand(ARN) == (0.0003, 0.0006)
    assert prices.on_demand("some.other-model-v1:0") == (0.0001, 0.0002)
    table = tmp_path / "prices.toml"
    table.write_text('[defaults.on_demand]\ninput_per_1k_tokens = 1\noutput_per_1k_tokens = 2\n'
                     '[imported_models.on_demand]\ninput_per_1k_tokens = 3\n'
                     f'[models."{ARN}".on_demand]\noutput_per_1k_tokens = 5\n')
    custom = PriceTable.load(table)
    assert custom.on_demand(ARN) == (3.0, 5.0)  # defaults, then imported models, then the model's own
    assert custom.on_demand(ARN[:-1] + "9") == (3.0, 2.0)


def test_the_folder_is_a_prefix_and_the_role_must_list_and_read_it():
    def source(uri):
        return source_folder({"modelDataSource": {"s3DataSource": {"s3Uri": uri}}})

    assert source("s3://bkt/models/tiny") == S3Uri("bkt", "models/tiny/")  # never also s3://b/models/tiny2/...
    assert source("s3://bkt/models/tiny/") == S3Uri("bkt", "models/tiny/")
    assert source("s3://bkt") == S3Uri("bkt", "")
    with pytest.raises(ValidationException, match="s3Uri is required"):
        source_folder({"modelDataSource": {}})
    assert required_permissions(S3Uri("bkt", "m/")) == [
        ("s3:ListBucket", "arn:aws:s3:::bkt", {"s3:prefix": "m/"}), ("s3:GetObject", "arn:aws:s3:::bkt/m/*", {})]


@pytest.mark.parametrize("member, value, words", [
    ("vpcConfig", {"subnetIds": ["subnet-1"], "securityGroupIds": ["sg-1"]}, "no VPC"),
    ("importedModelKmsKeyId", "arn:aws:kms:us-east-1:111122223333:key/x", "no KMS"),
    ("jobTags", [{"key": "team", "value": "a"}], "tags"),
    ("importedModelTags", [{"key": "team", "value": "a"}], "tags"),
])
def test_members_this_server_cannot_honour_are_refused_by_name(db, member, value, words):
    service = ModelImports(db, None, None, None, None, REGION, lambda path: None)  # refused before any is used
    params = {"jobName": "j", "importedModelName": "m", "roleArn": f"arn:aws:iam::{ACCOUNT}:role/r",
              "modelDataSource": {"s3DataSource": {"s3Uri": "s3://b/m/"}}, member: value}
    with pytest.raises(ValidationException) as caught:
        service.create_job(Principal.account_root(ACCOUNT), params)
    assert member in caught.value.message and words in caught.value.message
