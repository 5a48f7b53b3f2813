"""The model the agent tests run on: the tiny random Llama, with room for an agent's prompt (its tools' schemas
and the conversation). Its steps are valid calls (the tool-use grammar) but its choices are arbitrary, so
these tests check the protocol and the plumbing; what each choice does is tests/unit/agents'."""

from __future__ import annotations

import pytest

from tests.conftest import register_model
from tests.helpers import make_tiny_llama


@pytest.fixture(scope="session")
def tiny_agent_model(server, tmp_path_factory) -> str:
    return register_model(server, "tiny-agent-llama", make_tiny_llama(tmp_path_factory.mktemp("tiny"), context=4096))
