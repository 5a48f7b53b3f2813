"""Who is calling: the principal that every request resolves to before any operation runs."""

from __future__ import annotations

from dataclasses import dataclass

ROOT, USER, ROLE = "root", "user", "role"


@dataclass(frozen=True)
class Principal:
    account_id: str
    arn: str
    #: The access key (or bearer key id) the request came with; empty when unsigned.
    access_key_id: str = ""
    kind: str = ROOT
    name: str = ""

    @property
    def is_root(self) -> bool:
        return self.kind == ROOT

    @classmethod
    def account_root(cls, account_id: str, access_key_id: str = "") -> Principal:
        return cls(account_id, root_arn(account_id), access_key_id, ROOT, "root")


def root_arn(account_id: str) -> str:
    return f"arn:aws:iam::{account_id}:root"


def principal_arn(account_id: str, kind: str, name: str) -> str:
    return root_arn(account_id) if kind == ROOT else f"arn:aws:iam::{account_id}:{kind}/{name}"
