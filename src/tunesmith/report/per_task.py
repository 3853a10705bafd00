"""The per-task table of a ``data.mix`` run, shared by the markdown and HTML reports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tunesmith.evaluate.intervals import Interval

HEADER = ["task", "type", "weight", "test examples", "metric", "baseline", "tuned", "tuned interval", "change",
          "change interval", "p", "test", ""]


def _span(iv: dict[str, Any] | None, signed: bool = False) -> str | None:
    return Interval.from_dict(iv).span(signed) if iv else None


def per_task_table(per_task: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """The header and one row per task and metric, the task's leading metric first and marked.

    Args:
        per_task: The report's ``per_task`` entries (see :func:`tunesmith.evaluate.per_task.per_task`).

    Returns:
        Column names and rows of cells (numbers, text, or None for "no value").
    """
    rows: list[list[Any]] = []
    for t in per_task:
        head = [t["task"], t["type"], f"{t['weight']:g}" if t.get("weight") is not None else None, t["count"]]
        if not t["metrics"]:
            rows.append(head + ["no test examples"] + [None] * (len(HEADER) - len(head) - 1))
        names = sorted(t["metrics"], key=lambda m: m != t["metric"])
        for name in names:
            m = t["metrics"][name]
            diff = m.get("diff")
            flag = None if "p_value" not in m else ("significant" if m["significant"] else "not significant")
            rows.append(head + [name + (" (leading)" if name == t["metric"] else ""), (m.get("baseline") or {}).get("value"),
                                m["tuned"]["value"], _span(m["tuned"]), diff["value"] if diff else None,
                                _span(diff, signed=True), f"{m['p_value']:.3g}" if "p_value" in m else None,
                                m.get("test"), flag])
    return HEADER, rows


def shares_sentence(tasks: dict[str, dict[str, Any]]) -> str:
    """One sentence on how the training split was mixed: each task's weight, share, and examples before and after."""
    parts = [f"{tag} {info['share']:.0%} (weight {info['weight']:g}: {info['available']} examples -> {info['train']})"
             for tag, info in tasks.items() if "share" in info]
    return "Training shares after mixing: " + ", ".join(parts) + "; validation and test are not resampled."

