"""Bedrock ARNs as this deployment writes them, and the one check that every ARN a caller sends passes.

IAM policies are matched against ARN strings, so a resource must be named one way only: a model
reached as `arn:aws-cn:bedrock:eu-west-1::foundation-model/x` must not slip past a Deny written for
`arn:aws:bedrock:us-east-1::foundation-model/x`. Every Bedrock ARN a request carries is therefore
parsed here, and refused unless its partition and region are this deployment's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from outcrop.errors import ValidationException

#: The one partition Outcrop's ARNs are written in.
PARTITION = "aws"
FOUNDATION_MODEL = "foundation-model"

_ARN = re.compile(r"arn:(?P<partition>[^:]*):(?P<service>[^:]*):(?P<region>[^:]*):(?P<account>[^:]*):"
                  r"(?P<type>[^/:]+)/(?P<id>.+)", re.DOTALL)


@dataclass(frozen=True)
class BedrockArn:
    """A `bedrock` ARN: `arn:aws:bedrock:REGION:ACCOUNT:TYPE/ID` (foundation models have no account)."""

    region: str
    account: str
    resource_type: str
    resource_id: str

    def __str__(self) -> str:
        return f"arn:{PARTITION}:bedrock:{self.region}:{self.account}:{self.resource_type}/{self.resource_id}"


def foundation_model_arn(region: str, model_id: str) -> str:
    return str(BedrockArn(region, "", FOUNDATION_MODEL, model_id))


def parse_bedrock_arn(identifier: str, region: str) -> BedrockArn | None:
    """The ARN an identifier spells (percent-encoded or not), or None when it is not an ARN at all.

    An ARN of another partition, service or region is a ValidationException: this deployment has no
    such resource, and accepting the spelling would let it differ from the ARN policies are written for."""
    text = unquote(identifier)
    if not text.startswith("arn:"):
        return None
    match = _ARN.fullmatch(text)
    if match is None:
        raise ValidationException(f"'{identifier}' is not a valid ARN (arn:aws:bedrock:REGION:ACCOUNT:TYPE/ID)")
    if match["partition"] != PARTITION or match["service"] != "bedrock":
        raise ValidationException(f"The ARN '{identifier}' names partition '{match['partition']}' and service "
                                  f"'{match['service']}'; this deployment serves arn:{PARTITION}:bedrock only")
    if match["region"] != region:
        raise ValidationException(f"The ARN '{identifier}' names region '{match['region']}'; "
                                  f"this deployment is region {region}")
    return BedrockArn(region, match["account"], match["type"], match["id"])


def model_arn(identifier: str, region: str) -> str:
    """The ARN a model identifier is authorized against: a bare id names a foundation model; an ARN is
    checked (partition, region) and written back the one way policies see it."""
    arn = parse_bedrock_arn(identifier, region)
    return str(arn) if arn is not None else foundation_model_arn(region, identifier)
