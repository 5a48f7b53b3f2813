"""Every console page attacked automatically: each route in the table (so a new page is covered the day it is
added), its path parameters, query and form fields filled with what breaks code (empty, huge, control and
non-ASCII characters, numbers out of range, broken JSON, URIs), as the account root. A page may refuse, never
crash: every answer is below 500 and none is the "something went wrong" page."""

from __future__ import annotations

import re
import urllib.parse

import pytest

import outcrop.api.console.pages  # noqa: F401  (fills the route table the cases come from)
from outcrop.api.console.app import _ROUTES

NASTY = ["", "x" * 3000, "\x00\x01", "é✓", "-1", "0", "99999999999999999999", "{", "s3://", "s3://nope/../x",
         "arn:aws:bedrock:us-east-1:123456789012:custom-model/x/y", "%2F..%2F", "<script>"]
#: Path parameters: plausible names, missing ones, and garbage.
SEGMENTS = ["does-not-exist", "a" * 300, "%00", "é", "..", "TSTALIASID"]


def _path(pattern: str, segment: str) -> str:
    """A concrete path for a route's pattern, every named group filled with `segment`."""
    text = re.sub(r"\(\?P<\w+>[^)]*\)", urllib.parse.quote(segment, safe=""), pattern.pattern.removesuffix(r"\Z"))
    return text.replace("\\", "")


def _field_names(body: str) -> list[str]:
    return sorted(set(re.findall(r'name="([^"]+)"', body)) - {"csrf", "outcrop-csrf"})


def _cases():
    for method, pattern, _page in _ROUTES:
        yield pytest.param(method, pattern, id=f"{method} {pattern.pattern.removesuffix(chr(92) + 'Z')}")


@pytest.mark.parametrize("method,pattern", list(_cases()))
def test_a_page_refuses_bad_input_but_never_crashes(root, method, pattern):
    for number, segment in enumerate(SEGMENTS):
        path = _path(pattern, segment)
        if method == "GET":
            for value in NASTY[number::len(SEGMENTS)] or [""]:
                query = urllib.parse.urlencode({k: value for k in ("next", "prefix", "key", "model", "mode", "status",
                                                                    "since", "until", "groupBy", "policy", "version",
                                                                    "modality", "provider", "customization")})
                page = root.get(f"{path}?{query}")
                assert page.status < 500 and "Something went wrong" not in page.body, (path, query, page.body[-400:])
            continue
        form_page = root.get(path.rsplit("/", 1)[0]) if "/" in path else root.get(path)
        names = _field_names(form_page.body) or ["name"]
        for value in NASTY:
            page = root.post(path, {name: value for name in names})
            assert page.status < 500 and "Something went wrong" not in page.body, (path, value, page.body[-400:])
