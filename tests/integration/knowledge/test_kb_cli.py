"""`outcrop kb` as a user runs it on the embedded defaults: a folder of documents synced into a new knowledge
base, then searched and asked, each command a subprocess talking to the session's server. One test, one
knowledge base: every sync is a job process that loads the embedding model, and `ask` loads the chat model.
"""

from __future__ import annotations

import re
import subprocess
import sys

from tests.integration.security.helpers import outcrop

#: Three documents on topics far apart, so that a question about one can only mean that one.
DOCUMENTS = {
    "bread.txt": "Sourdough bread rises because wild yeast and lactic acid bacteria in the starter ferment the "
                 "flour. Bakers feed the starter with flour and water every day.",
    "saturn.txt": "Saturn is the sixth planet from the Sun. Its bright rings are made of ice and rock, and it has "
                  "more than a hundred moons.",
    "chess.txt": "In chess, a pawn that reaches the last rank is promoted, usually to a queen. Castling moves the "
                 "king two squares toward one of its rooks.",
}


def kb(server, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`outcrop kb ...` against the session server; the exit status is the caller's to check."""
    command = [sys.executable, "-m", "outcrop", "kb", *args, "--endpoint-url", server.endpoint,
               "--data-dir", str(server.data_dir)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def test_sync_a_folder_then_retrieve_and_ask_with_sources(server, tmp_path):
    for name, text in DOCUMENTS.items():
        (tmp_path / name).write_text(text)
    outcrop(server, "s3", "mb", "s3://kb-cli")

    created = kb(server, "create", "docs", "--source", "s3://kb-cli/docs/")
    assert created.returncode == 0, created.stderr
    assert re.fullmatch(r"[0-9A-Z]{10}", created.stdout.strip().splitlines()[-1]), created.stdout

    synced = kb(server, "sync", "docs", "--from", str(tmp_path))
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert "upload: " in synced.stdout and "s3://kb-cli/docs/saturn.txt" in synced.stdout
    [statistics] = [line for line in synced.stdout.splitlines() if line.startswith("docs/docs: ")]
    assert "COMPLETE" in statistics and "3 scanned" in statistics and "3 new" in statistics, statistics
    assert "0 failed" in statistics, synced.stdout

    listed = kb(server, "list")
    assert listed.returncode == 0 and re.search(r"\bdocs\b.*\bACTIVE\b", listed.stdout), listed.stdout + listed.stderr

    found = kb(server, "retrieve", "docs", "What are the rings of Saturn made of?", "-n", "1")
    assert found.returncode == 0, found.stderr
    first = found.stdout.splitlines()[0]
    assert first.startswith("1. ") and first.endswith("s3://kb-cli/docs/saturn.txt"), found.stdout
    assert "ice and rock" in found.stdout

    # Greedy: a sampled answer may wander off the passage, and a sentence that shares too little is not cited.
    asked = kb(server, "ask", "docs", "What are the rings of Saturn made of?", "--max-tokens", "30",
               "--temperature", "0")
    assert asked.returncode == 0, asked.stderr
    answer, _, sources = asked.stdout.partition("\n[1] ")
    assert answer.strip(), asked.stdout
    assert sources.startswith("s3://kb-cli/docs/"), asked.stdout + asked.stderr
    assert re.search(r"^session: \S+$", asked.stderr, re.MULTILINE), asked.stderr
