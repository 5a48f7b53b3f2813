"""The README's "Use it from your framework" snippets, run as written against a real `outcrop serve`.

Each snippet runs in its own process with only what the README's Quickstart sets up: the three exports
(the data dir's credentials and config files, profile `outcrop`) and the endpoint, replaced by this server's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.integration.frameworks.shared import DIMENSIONS, JS_DIR, node, quickstart_env

README = REPO / "README.md"
SECTION = "## Use it from your framework"
ENDPOINT = "http://127.0.0.1:8600"

#: The section's snippets in order: (name, fence language, whether it ends by printing an embedding's size).
SNIPPETS = [("langchain", "python", True), ("llamaindex", "python", True), ("javascript", "js", True),
            ("aws-cli", "sh", False), ("langchain-tools", "python", False)]


def snippets() -> list[tuple[str, str]]:
    text = README.read_text()
    assert SECTION in text, f"README.md has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```(\w+)\n(.*?)^```", section, flags=re.M | re.S)


def test_the_section_has_one_snippet_per_client():
    assert [language for language, _ in snippets()] == [language for _, language, _ in SNIPPETS]


@pytest.mark.parametrize(("name", "language", "embeds"), SNIPPETS, ids=[s[0] for s in SNIPPETS])
def test_snippet_runs_as_written(server, tmp_path, name, language, embeds):
    code = snippets()[[s[0] for s in SNIPPETS].index(name)][1]
    assert ENDPOINT in code
    code = code.replace(ENDPOINT, server.endpoint)
    env = quickstart_env(server)
    if language == "python":
        command, cwd, stdin = [sys.executable, "-c", code], tmp_path, None
    elif language == "js":
        command, cwd, stdin = [node(), "--input-type=module"], JS_DIR, code
    else:
        # `aws` as this environment installs it (awscli is in the test extras).
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        command, cwd, stdin = ["bash", "-euo", "pipefail", "-c", code], tmp_path, None
    result = subprocess.run(command, cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout, result.stdout
    if embeds:
        assert result.stdout.strip().splitlines()[-1] == str(DIMENSIONS), result.stdout
