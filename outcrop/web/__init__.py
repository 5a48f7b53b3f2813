"""Outcrop's web pages: one Jinja2 environment, the templates and static files beside it, one chart helper.

Every page renders through `render`: templates autoescape, so pass user text as plain strings and let the
template escape it; only trusted markup (an SVG chart from `outcrop.web.charts`, a static file of this package)
is `Markup`. Static CSS and JS are rendered into the pages with `static(name)`: the standalone reports must work
opened from a disk or a bucket without a server, and the raters' pages allow their one script by its CSP hash
(`static_hash`), so a page's script is exactly the file's text.
"""

from __future__ import annotations

import base64
import hashlib
import urllib.parse
from functools import cache
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

__all__ = ["ENV", "Markup", "render", "static", "static_hash", "static_url"]


@cache
def static(name: str) -> Markup:
    """The text of `static/<name>`, trusted: it ships with Outcrop."""
    return Markup(resources.files(__name__).joinpath("static", name).read_text(encoding="utf-8"))


def static_hash(name: str) -> str:
    """The CSP source (`sha256-...`) that allows `static/<name>` inline, as `static` renders it."""
    return "sha256-" + base64.b64encode(hashlib.sha256(str(static(name)).encode()).digest()).decode()


@cache
def static_url(name: str) -> str:
    """The console's URL of `static/<name>`, versioned by its content so that browsers may cache it for good."""
    data = resources.files(__name__).joinpath("static", *name.split("/")).read_bytes()
    return f"/console/static/{name}?v={hashlib.sha256(data).hexdigest()[:12]}"


ENV = Environment(loader=PackageLoader(__name__, "templates"), autoescape=True, undefined=StrictUndefined,
                  trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
ENV.globals["static"] = static
ENV.globals["static_url"] = static_url
ENV.filters["quote"] = lambda text: urllib.parse.quote(str(text), safe="")


def render(template: str, **context: Any) -> str:
    return ENV.get_template(template).render(**context)
