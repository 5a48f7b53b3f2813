"""Request -> principal, in exactly one place: SigV4 signatures, bearer API keys, or auth switched off."""

from __future__ import annotations

from outcrop.errors import MissingAuthenticationTokenException, UnrecognizedClientException
from outcrop.iam import sigv4
from outcrop.iam.principal import Principal
from outcrop.iam.service import IamService

#: boto3 sends `Authorization: Bearer` (AWS_BEARER_TOKEN_BEDROCK) to these services only.
BEARER_SERVICES = frozenset({"bedrock", "bedrock-runtime"})
INVALID_TOKEN = "The security token included in the request is invalid."


def authenticate(iam: IamService, *, auth_enabled: bool, service: str, method: str, raw_path: str, query: str,
                 headers: dict[str, str], body: bytes) -> Principal:
    if not auth_enabled:  # OUTCROP_AUTH=off: every caller is the first account's root
        return Principal.account_root(iam.default_account())
    authorization = headers.get("authorization", "")
    if authorization.startswith("Bearer "):
        if service not in BEARER_SERVICES:
            allowed = " and ".join(sorted(BEARER_SERVICES))
            raise UnrecognizedClientException(f"Bearer API keys are accepted by {allowed} only; "
                                              f"sign {service} requests with SigV4.")
        principal = iam.authenticate_bearer(authorization[len("Bearer "):].strip())
        if principal is None:
            raise UnrecognizedClientException(INVALID_TOKEN)
        return principal
    if not authorization:
        raise MissingAuthenticationTokenException("Missing Authentication Token")
    parsed = sigv4.parse_authorization(authorization)
    found = iam.authenticate_key(parsed.access_key_id)
    if found is None:
        raise UnrecognizedClientException(INVALID_TOKEN)
    principal, secret = found
    sigv4.verify(parsed, secret, method=method, raw_path=raw_path, query=query, headers=headers, body=body)
    return principal
