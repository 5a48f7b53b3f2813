"""The repository stands on its own: no module, test or benchmark reads a path outside the checkout.

A clone is all a user or a contributor has. Data the tests need lives in tests/data, data the product
needs ships in the package (outcrop/evaluation/builtin_datasets); a folder beside the checkout (such
as a data folder a development machine may keep there) must never be reached for.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Ways code has reached outside the checkout before: a fixed absolute path, a sibling folder, or a
#: walk up past the repository root from a test file (tests/unit/x.py: parents[2] is the root).
_OUTSIDE = re.compile(r"/work/|\.\./shared|[\"']shared[\"']\s*/\s*[\"']data[\"']|ROOT\.parent\s*/"
                      r"|__file__\)\.resolve\(\)\.parents\[[3-9]\]")


def _sources() -> list[Path]:
    files = [p for folder in ("outcrop", "tests", "bench") for p in (REPO / folder).rglob("*.py")]
    return [p for p in files if p.resolve() != Path(__file__).resolve()] + [REPO / "Makefile", REPO / ".ci" / "run"]


def test_no_source_names_a_path_outside_the_repository():
    found = [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
             for path in _sources() if path.is_file()
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
             if _OUTSIDE.search(line)]
    assert found == []


_PROBE = """
import json, os, sys
repo, outside = sys.argv[1], []
parent = os.path.dirname(repo)
# What lies beside the checkout now (a sibling data folder, say); files made later (temp files, when the checkout
# itself is in /tmp) are the run's own.
beside = {os.path.join(parent, name) for name in os.listdir(parent)} - {repo}

def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.path.abspath(os.fsdecode(args[0]))
        if any(path == b or path.startswith(b + os.sep) for b in beside):
            outside.append(path)

sys.addaudithook(hook)
import pytest
code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", os.path.join(repo, "tests")])
print("OUTSIDE " + json.dumps(sorted(set(outside))))
sys.exit(code)
"""


@pytest.mark.slow  # imports every test module, torch included
def test_collecting_the_suite_opens_nothing_beside_the_checkout():
    """Every test module imported (as collection does) with an audit hook on `open`: nothing outside the
    checkout but next to it (where a sibling data folder would be) is read, so the suite behaves the same without it."""
    result = subprocess.run([sys.executable, "-c", _PROBE, str(REPO)], capture_output=True, text=True,
                            timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    opened = json.loads(result.stdout.rsplit("OUTSIDE ", 1)[1])
    # The virtual environment may live beside the checkout on some machines; it is installed code, not data.
    assert [p for p in opened if not p.startswith(sys.prefix)] == []


def test_every_data_file_of_the_package_ships_in_the_wheel():
    """A non-editable install has only what pyproject's package-data names: every file of the package that is not
    Python (templates, catalogs, datasets, calibrations) must match one of its globs, as setuptools expands them."""
    import tomllib

    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["outcrop"]
    package = REPO / "outcrop"
    shipped = {path for pattern in globs for path in package.glob(pattern)}
    data = {path for path in package.rglob("*") if path.is_file() and path.suffix not in (".py", ".pyc")
            and "__pycache__" not in path.parts}
    assert sorted(str(p.relative_to(REPO)) for p in data - shipped) == []
