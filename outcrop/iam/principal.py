"""Who is calling: the principal that every request resolves to before any operation runs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    account_id: str
    arn: str
    #: The access key (or bearer key id) the request came with; empty when unsigned.
    access_key_id: str = ""

    @classmethod
    def account_root(cls, account_id: str, access_key_id: str = "") -> Principal:
        return cls(account_id, f"arn:aws:iam::{account_id}:root", access_key_id)
