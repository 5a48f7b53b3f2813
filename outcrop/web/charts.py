"""The one chart helper: a matplotlib figure as an inline <svg> element, trusted markup for a template.

No pyplot, so no global figure state across threads. Labels are user text (model ids, categories, domains):
`$` in them is a dollar sign, not matplotlib's math text, so math text is off while a chart is drawn and saved.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable
from html import escape
from typing import Any

from markupsafe import Markup


def svg(draw: Callable[[Any], None], size: tuple[float, float], *, settings: dict[str, Any] | None = None,
        layout: str | None = None, tight: bool = False, metadata: dict[str, Any] | None = None,
        title: str | None = None, number: int | None = None) -> Markup:
    """`draw(figure)` draws on a new Figure of `size` inches, under matplotlib `settings`.

    `layout` and `tight` (bbox_inches="tight") size the figure; `metadata` goes to savefig. With `title`, the
    <svg> gets role="img", an aria-label and a <title>; with `number`, every id and reference to one is prefixed
    with `chart<number>-`, so several charts on one page do not draw each other's hatches and clips."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context({"text.parse_math": False, **(settings or {})}):
        figure = Figure(figsize=size, layout=layout)
        draw(figure)
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata=metadata, **({"bbox_inches": "tight"} if tight else {}))
    text = buffer.getvalue()
    text = text[text.index("<svg"):]  # drop the XML prologue and DOCTYPE: invalid inside HTML
    if number is not None:
        # matplotlib numbers its ids per figure (figure_1, patch_1, hatch and clip ids): on one page they would
        # clash, and a url(#id) would then draw another chart's hatch or clip. Prefix every id and every reference
        # to one. Only inside tags: a label such as `x id="y"` is text content and stays as written.
        prefix = f"chart{number}-"

        def prefixed(tag: re.Match[str]) -> str:
            tag_text = re.sub(r'\sid="', f' id="{prefix}', tag.group())
            return re.sub(r'(url\(#|href="#)', rf"\g<1>{prefix}", tag_text)

        text = re.sub(r"<[^<>]+>", prefixed, text)
    if title is not None:
        head_end = text.index(">") + 1
        text = (text[:4] + f' role="img" aria-label="{escape(title)}"' + text[4:head_end]
                + f"<title>{escape(title)}</title>" + text[head_end:])
    return Markup(text)  # matplotlib escapes the labels it writes; the title is escaped above
