"""Shared by the framework tests: one `outcrop serve` (the suite's `server`), explicit credentials, and the
facts every usage check compares against (CountTokens, the usage record of a request id).

Every client here gets the root key, region and endpoint explicitly, so nothing reads ~/.aws."""

from __future__ import annotations

import pytest

from tests.backends import query
from tests.integration.frameworks.shared import QUESTION


@pytest.fixture(scope="session")
def aws_kwargs(server) -> dict[str, str]:
    """What LangChain and LlamaIndex take to reach Outcrop: the endpoint, a region and the root key."""
    key_id, secret = server.root_key()
    return {"endpoint_url": server.endpoint, "region_name": "us-east-1",
            "aws_access_key_id": key_id, "aws_secret_access_key": secret}


@pytest.fixture(scope="session")
def count_tokens(runtime):
    """CountTokens of one user turn, the way Converse would render it."""
    def count(model_id: str, text: str = QUESTION) -> int:
        return runtime.count_tokens(modelId=model_id, input={"converse": {
            "messages": [{"role": "user", "content": [{"text": text}]}]}})["inputTokens"]
    return count


@pytest.fixture(scope="session")
def usage_record(server):
    """The usage record the server wrote for one request id: (model_id, operation, input, output tokens)."""
    def record(request_id: str) -> tuple[str, str, int, int]:
        row = next(iter(query(server.data_dir, "SELECT model_id, operation, input_tokens, output_tokens "
                              "FROM usage_records WHERE request_id = ?", request_id)), None)
        assert row is not None, f"no usage record for request {request_id}"
        return row
    return record

