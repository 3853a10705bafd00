"""The run report as one self-contained HTML page, drawn from the report's sections (:mod:`tunesmith.report.sections`)."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunesmith.report.sections import Bullets, Figure, Section, Table, Text

_STYLE = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:.92em}
th{background:#f4f4f4}img{max-width:100%}.verdict{font-size:1.3em;padding:.6em 1em;border-radius:6px}
.met{background:#e3f6e3}.not-met{background:#fbe3e3}.inconclusive{background:#fff5d6}.muted{color:#666}
.warning{background:#fff5d6;padding:.3em .6em;border-radius:4px}"""


def _inline(text: str) -> str:
    """Escaped text with the sections' ``**bold**`` and ```code``` spans as HTML."""
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))


def _image(path: Path | None, alt: str) -> str:
    if path is None or not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def render_body(sections: Sequence[Section], plots: dict[str, Path] | None = None,
                skip: set[str] | frozenset[str] = frozenset()) -> str:
    """The sections as HTML without the page around them (the web UI puts them in its own page).

    Args:
        sections: The report's sections, in order.
        plots: Plot name -> PNG file, embedded; a figure whose file is missing is left out.
        skip: Figures to leave out (the UI draws the loss curves itself, interactively).
    """
    parts: list[str] = []
    for section in sections:
        parts.append(f"<h{section.level}>{html.escape(section.title)}</h{section.level}>")
        for block in section.blocks:
            if isinstance(block, Text):
                tone = block.tone
                if tone in ("met", "not met", "inconclusive"):
                    parts.append(f"<div class='verdict {tone.replace(' ', '-')}'>{_inline(block.text)}</div>")
                else:
                    parts.append(f"<p class='{tone}'>{_inline(block.text)}</p>")
            elif isinstance(block, Bullets):
                parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block.items) + "</ul>")
            elif isinstance(block, Table):
                head = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
                body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in block.rows)
                parts.append(f"<table><tr>{head}</tr>{body}</table>")
            elif isinstance(block, Figure) and block.plot not in skip:
                parts.append(_image((plots or {}).get(block.plot), block.alt))
    return "".join(parts)


def render_html(sections: Sequence[Section], plots: dict[str, Path] | None = None) -> str:
    """The sections as one page, with the PNG plots embedded so the file stands alone.

    Args:
        sections: The report's sections, in order (the first one's title is the page's title).
        plots: Plot name -> PNG file; a figure whose file is missing is left out.
    """
    title = html.escape(sections[0].title) if sections else "tunesmith report"
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{_STYLE}</style></head><body>{render_body(sections, plots)}</body></html>\n")
