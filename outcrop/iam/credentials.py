"""The root access key, written on first start where boto3 and the AWS CLI look for it.

`<data dir>/credentials` is an AWS shared-credentials file with the profile `outcrop`, so
`AWS_SHARED_CREDENTIALS_FILE=<data dir>/credentials AWS_PROFILE=outcrop` is all a client needs;
`<data dir>/config` beside it names the region, for `AWS_CONFIG_FILE`.
"""

from __future__ import annotations

import configparser
import os
import secrets
import string
from pathlib import Path

PROFILE = "outcrop"
_KEY_ALPHABET = string.ascii_uppercase + string.digits


def new_access_key() -> tuple[str, str]:
    """An (access key id, secret) pair in AWS's shapes: `AKIA` + 16 characters, 40-character secret."""
    key_id = "AKIA" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(16))
    return key_id, secrets.token_urlsafe(30)[:40]


def ensure_root_credentials(path: Path, region: str, key_id: str = "", secret: str = "") -> tuple[str, str]:
    """Read the root key from `path`, or create it (explicit values win); the file is mode 0600."""
    parser = configparser.ConfigParser()
    if path.is_file():
        parser.read(path)
    section = parser[PROFILE] if parser.has_section(PROFILE) else None
    if section is not None and not key_id and "aws_access_key_id" in section:
        return section["aws_access_key_id"], section["aws_secret_access_key"]
    if not key_id:
        key_id, secret = new_access_key()
    if not secret:
        raise ValueError("OUTCROP_ROOT_ACCESS_KEY_ID is set without OUTCROP_ROOT_SECRET_ACCESS_KEY")
    parser[PROFILE] = {"aws_access_key_id": key_id, "aws_secret_access_key": secret}
    _write_private(path, parser)
    config = configparser.ConfigParser()
    config[f"profile {PROFILE}"] = {"region": region}
    _write_private(path.with_name("config"), config)
    return key_id, secret


def _write_private(path: Path, parser: configparser.ConfigParser) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        parser.write(fh)
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply to a file that already existed
