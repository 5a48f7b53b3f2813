"""Bedrock's resource ids, as they appear at the end of ARNs."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_lowercase + string.digits


def new_id() -> str:
    """12 lowercase letters and digits, the form of job, custom-model and provisioned-model ids."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(12))
