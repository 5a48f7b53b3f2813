"""The tools every security test attacks with."""

from __future__ import annotations

import subprocess
import sys

import pytest
from botocore.exceptions import ClientError

QUESTION = [{"role": "user", "content": [{"text": "hello world"}]}]


def outcrop(server, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "outcrop", *args, "--data-dir", str(server.data_dir)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


def error_code(call) -> tuple[str, int, str]:
    with pytest.raises(ClientError) as caught:
        call()
    response = caught.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Message"]
