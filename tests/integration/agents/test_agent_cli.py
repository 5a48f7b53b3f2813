"""`outcrop agent` as a user runs it: an agent made from a function schema file with return of control, then
asked a question, the CLI carrying out the handed-back call with `--result`. Each command is a subprocess
talking to the session's server, on the tiny random model (conftest.py): the commands and what they print are
the subject here, whichever step the model takes."""

from __future__ import annotations

import json
import re
import subprocess
import sys

WEATHER = {"functions": [{"name": "get_weather", "description": "The weather now in a city",
                          "parameters": {"city": {"type": "string", "description": "the city", "required": True}}}]}


def agent(server, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`outcrop agent ...` against the session server; the exit status is the caller's to check."""
    command = [sys.executable, "-m", "outcrop", "agent", *args, "--endpoint-url", server.endpoint,
               "--data-dir", str(server.data_dir)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_create_from_a_function_schema_then_invoke_with_return_of_control_and_traces(server, tmp_path,
                                                                                     tiny_agent_model):
    schema = tmp_path / "weather.json"
    schema.write_text(json.dumps(WEATHER))
    # Not `weather`: agent names are unique in an account, and the boto3 tests of agents use that one.
    created = agent(server, "create", "weather-cli", "--model", tiny_agent_model, "--instruction",
                    "You answer questions about the weather. Always call get_weather first.",
                    "--functions", str(schema), "--return-control", "--memory-days", "2")
    assert created.returncode == 0, created.stderr
    agent_id = created.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"[0-9A-Z]{10}", agent_id), created.stdout

    listed = agent(server, "list")
    assert listed.returncode == 0 and re.search(rf"^{agent_id}\s+weather-cli\s+PREPARED\b", listed.stdout,
                                                re.MULTILINE), listed.stdout + listed.stderr

    asked = agent(server, "invoke", "weather-cli", "What is the weather in Paris?", "--trace",
                  "--result", "Sunny, 24 degrees", "--memory-id", "cli-user", "--end-session")
    assert asked.returncode == 0, asked.stderr
    assert re.search(r"^session: \S+$", asked.stderr, re.MULTILINE), asked.stderr
    assert re.search(r"^\[step 1\] model input ", asked.stderr, re.MULTILINE), asked.stderr
    assert re.search(r"^\[final\] ", asked.stderr, re.MULTILINE), asked.stderr
    # Whichever it chose first: a call handed back is shown, carried out with --result, and the turn goes on.
    if "[return control]" in asked.stderr:
        assert re.search(r"^\[return control\] actions\.get_weather\(city=", asked.stderr, re.MULTILINE)
    # The session ended: its summary is in the memory of cli-user.
    memory = server.client("bedrock-agent-runtime").get_agent_memory(
        agentId=agent_id, agentAliasId="TSTALIASID", memoryId="cli-user", memoryType="SESSION_SUMMARY")
    assert [m["sessionSummary"]["memoryId"] for m in memory["memoryContents"]] == ["cli-user"]
