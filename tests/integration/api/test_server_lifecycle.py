"""Starting, stopping and restarting `outcrop serve`, and models registered from the command line."""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.conftest import prepare_data_dir, start_server, stop_server
from tests.helpers import make_tiny_llama


def test_sigterm_shuts_down_cleanly_and_restart_keeps_state(tmp_path):
    model_dir = make_tiny_llama(tmp_path / "tiny")
    registered = subprocess.run(
        [sys.executable, "-m", "outcrop", "models", "register", "tiny-llama", str(model_dir),
         "--data-dir", str(prepare_data_dir(tmp_path / "data"))], capture_output=True, text=True, timeout=120)
    assert registered.returncode == 0, registered.stderr
    assert registered.stdout.strip() == "local.tiny-llama-v1:0"

    first = start_server(tmp_path / "data")
    try:
        models = first.client("bedrock").list_foundation_models(byProvider="local")["modelSummaries"]
        assert [m["modelId"] for m in models] == ["local.tiny-llama-v1:0"]
        assert models[0]["outputModalities"] == ["TEXT"]
    finally:
        first.process.send_signal(signal.SIGTERM)
        assert first.process.wait(timeout=30) == 0
    assert any("Shutting down" in line or "Finished server process" in line for line in first.output)

    # A second start migrates nothing new, keeps the credentials and the registered model.
    key_before = (tmp_path / "data" / "credentials").read_text()
    second = start_server(tmp_path / "data")
    try:
        got = second.client("bedrock").get_foundation_model(modelIdentifier="local.tiny-llama-v1:0")
        assert got["modelDetails"]["providerName"] == "local"
        assert (tmp_path / "data" / "credentials").read_text() == key_before
    finally:
        assert stop_server(second) == 0


def test_register_refuses_what_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    result = subprocess.run(
        [sys.executable, "-m", "outcrop", "models", "register", "notes", str(tmp_path / "notes.txt"),
         "--data-dir", str(prepare_data_dir(tmp_path / "data"))], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "ValidationException" in result.stderr and "config.json" in result.stderr
