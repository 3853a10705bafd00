"""The run report as markdown, drawn from the report's sections (:mod:`tunesmith.report.sections`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunesmith.report.sections import Bullets, Figure, Section, Table, Text

_BADGE = {"met": "✅ ", "not met": "❌ ", "inconclusive": "❔ ", "warning": "⚠️ "}


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    text = (f"{value:.4f}" if isinstance(value, float) else str(value)).replace("|", "\\|").replace("\n", " ")
    # Long cells keep their start and their end: a QA input ends with its question, after the passage.
    return text if len(text) <= 160 else f"{text[:80]} … {text[-75:]}"


def render_markdown(sections: Sequence[Section], plots: dict[str, Path] | None = None) -> str:
    """The sections as one markdown document; figures link the run folder's PNG files that exist.

    Args:
        sections: The report's sections, in order.
        plots: Plot name -> PNG file; a figure whose file is missing is left out.
    """
    lines: list[str] = []
    for section in sections:
        lines += ["#" * section.level + " " + section.title, ""]
        for block in section.blocks:
            if isinstance(block, Text):
                lines += [_BADGE.get(block.tone, "") + block.text, ""]
            elif isinstance(block, Bullets):
                lines += [f"- {item}" for item in block.items] + [""]
            elif isinstance(block, Table):
                lines += ["| " + " | ".join(block.header) + " |", "|" + "---|" * len(block.header)]
                lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in block.rows] + [""]
            elif isinstance(block, Figure):
                path = (plots or {}).get(block.plot)
                if path is not None and path.is_file():
                    lines += [f"![{block.alt}]({path.name})", ""]
    return "\n".join(lines).rstrip() + "\n"
