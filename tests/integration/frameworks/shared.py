"""What the framework tests share besides fixtures (those are in conftest.py)."""

from __future__ import annotations

import math
import os
import shutil
import subprocess

import pytest

from tests.helpers import REPO

#: Every chat test asks this, greedily, in a few tokens; the built-in SmolLM2 answers "... Paris."
QUESTION = "What is the capital of France?"
MAX_TOKENS = 16
#: Three sentences for the embedding checks: the first two mean the same, the third something else.
SIMILAR = ("The cat sat on the mat.", "A cat was sitting on the rug.")
UNRELATED = "Quarterly revenue grew by eight percent."
#: The built-in embedding model (all-MiniLM-L6-v2) answers every embedding id with this many dimensions.
DIMENSIONS = 384


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


#: The AWS SDK for JavaScript's package.json, lock file and the driver (drive.mjs).
JS_DIR = REPO / "tests" / "js"


def node() -> str:
    """The `node` binary with the AWS SDK for JavaScript installed beside the driver, or a skip saying why."""
    binary = shutil.which("node")
    if binary is None:
        pytest.skip("node is not installed: the AWS SDK for JavaScript tests need Node.js 20 or later")
    if not (JS_DIR / "node_modules" / "@aws-sdk" / "client-bedrock-runtime").is_dir():
        # `make test` runs `npm ci` first; run directly, pytest does it once here.
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed: it installs the AWS SDK for JavaScript into tests/js (npm ci)")
        result = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, f"npm ci in tests/js failed:\n{result.stderr}"
    return binary


def quickstart_env(server) -> dict[str, str]:
    """A client process's environment as the README's Quickstart sets it up: the data dir's credentials and
    config (region) files and the profile `outcrop`. No AWS_* variable of this process leaks in, and nothing
    reads ~/.aws."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(server.data_dir / "credentials"),
               AWS_CONFIG_FILE=str(server.data_dir / "config"), AWS_PROFILE="outcrop",
               AWS_EC2_METADATA_DISABLED="true", NODE_NO_WARNINGS="1")
    return env
