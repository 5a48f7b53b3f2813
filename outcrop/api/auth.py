"""Request -> principal, in exactly one place.

For now every request is accepted and acts as the root of the default account; the access key
id is read from the SigV4 `Authorization` header or a bearer token so that the security work can
make this strict here without touching any operation.
"""

from __future__ import annotations

import re

from outcrop.iam.principal import Principal
from outcrop.platform.config import Settings

_SIGV4_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")


def resolve_principal(headers: dict[str, str], settings: Settings) -> Principal:
    authorization = headers.get("authorization", "")
    key_id = ""
    if authorization.startswith("AWS4-HMAC-SHA256"):
        match = _SIGV4_CREDENTIAL.search(authorization)
        key_id = match.group(1) if match else ""
    elif authorization.startswith("Bearer "):
        key_id = "bearer"
    return Principal.account_root(settings.default_account_id, key_id)
