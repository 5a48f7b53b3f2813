"""Request -> principal, in exactly one place: SigV4 signatures, bearer API keys, a console page's session
(its cookie and CSRF token: `ConsoleApp.api_principal`), or auth switched off."""

from __future__ import annotations

from collections.abc import Callable

from outcrop.api.asgi import PLAIN, transport
from outcrop.errors import MissingAuthenticationTokenException, UnrecognizedClientException
from outcrop.iam import sigv4
from outcrop.iam.principal import Principal
from outcrop.iam.service import IamService

#: boto3 sends `Authorization: Bearer` (AWS_BEARER_TOKEN_BEDROCK) to these services only.
BEARER_SERVICES = frozenset({"bedrock", "bedrock-runtime"})
INVALID_TOKEN = "The security token included in the request is invalid."
#: A bearer key is the whole secret (no signature), so it is taken only where no one on the path can read it.
BEARER_OVER_PLAIN_HTTP = ("Bearer API keys are accepted only over HTTPS (`outcrop serve --tls`) or from the machine "
                          "the server runs on; this request sent one over plain HTTP, so it was not checked. "
                          "Consider that key exposed: delete it and create another, or sign requests with SigV4.")


def authenticate(iam: IamService, *, auth_enabled: bool, service: str, method: str, raw_path: str, query: str,
                 headers: dict[str, str], body: bytes, tls: bool = False, client_ip: str = "",
                 console: Callable[[dict[str, str]], Principal | None] | None = None) -> Principal:
    """`tls`: the request came over HTTPS; `client_ip`: its client's address (a bearer key needs one or the
    other to be safe: HTTPS, or a client on this machine); `console`: the principal of a console page's call,
    or None when the request is not one."""
    if not auth_enabled:  # OUTCROP_AUTH=off: every caller is the first account's root
        return Principal.account_root(iam.default_account())
    authorization = headers.get("authorization", "")
    if authorization.startswith("Bearer "):
        if service not in BEARER_SERVICES:
            allowed = " and ".join(sorted(BEARER_SERVICES))
            raise UnrecognizedClientException(f"Bearer API keys are accepted by {allowed} only; "
                                              f"sign {service} requests with SigV4.")
        if transport(tls, client_ip) == PLAIN:  # the key crossed the network in clear; it is not even looked up
            raise UnrecognizedClientException(BEARER_OVER_PLAIN_HTTP)
        principal = iam.authenticate_bearer(authorization[len("Bearer "):].strip())
        if principal is None:
            raise UnrecognizedClientException(INVALID_TOKEN)
        return principal
    if not authorization and console is not None and (principal := console(headers)) is not None:
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
