"""The root access key, written on first start where boto3 and the AWS CLI look for it.

`<data dir>/credentials` is an AWS shared-credentials file with the profile `outcrop`, so
`AWS_SHARED_CREDENTIALS_FILE=<data dir>/credentials AWS_PROFILE=outcrop` is all a client needs;
`<data dir>/config` beside it names the region, for `AWS_CONFIG_FILE`.
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path

PROFILE = "outcrop"


def write_credentials(path: Path, region: str, key_id: str, secret: str) -> None:
    """Write the profile (mode 0600), leaving the file alone when it already holds this key."""
    parser = configparser.ConfigParser()
    if path.is_file():
        parser.read(path)
        if parser.has_section(PROFILE) and parser[PROFILE].get("aws_access_key_id") == key_id \
                and parser[PROFILE].get("aws_secret_access_key") == secret:
            return
    parser[PROFILE] = {"aws_access_key_id": key_id, "aws_secret_access_key": secret}
    _write_private(path, parser)
    config = configparser.ConfigParser()
    config[f"profile {PROFILE}"] = {"region": region}
    _write_private(path.with_name("config"), config)


def _write_private(path: Path, parser: configparser.ConfigParser) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        parser.write(fh)
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply to a file that already existed


def read_credentials(path: Path) -> tuple[str, str] | None:
    """(access key id, secret) of the profile, or None when the file or the profile is missing."""
    parser = configparser.ConfigParser()
    if not path.is_file() or not parser.read(path) or not parser.has_section(PROFILE):
        return None
    section = parser[PROFILE]
    key_id, secret = section.get("aws_access_key_id"), section.get("aws_secret_access_key")
    return (key_id, secret) if key_id and secret else None
