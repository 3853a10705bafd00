"""Scoring predictions from any system: ``tunesmith score``.

Predictions are JSONL lines with ``id`` and ``prediction``; references are lines with ``id`` and
``reference`` (a string, or a list of acceptable strings). Every metric of the task is computed
with its confidence interval; with a second prediction file as the baseline, the two are compared
with a paired test and the interval of the difference (:mod:`tunesmith.evaluate.stats` says which).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunesmith.data.io import read_sheet
from tunesmith.errors import DataError
from tunesmith.evaluate.metrics import METRICS
from tunesmith.tasks import get_task
from tunesmith.evaluate.normalize import match_label
from tunesmith.evaluate.stats import MIN_TEST_EXAMPLES, compare_paired, metric_interval


def _read(path: Path, field: str) -> dict[str, Any]:
    """``id -> field`` from a JSONL (or CSV) file.

    Raises:
        DataError: The file is missing, a line is not a JSON object, an id repeats, or a field is missing or mistyped.
    """
    out: dict[str, Any] = {}
    for line, row in read_sheet(path):
        if not isinstance(row, dict):
            raise DataError("expected a JSON object", path=path, line=line)
        if row.get("id") is None:
            raise DataError("missing required field", path=path, line=line, field="id")
        key = str(row["id"])
        if key in out:
            raise DataError(f"id {key!r} appears twice", path=path, line=line, field="id")
        value = row.get(field)
        ok = isinstance(value, str) or (field == "reference" and isinstance(value, list) and value
                                         and all(isinstance(v, str) for v in value))
        if not ok:
            want = "a string or a non-empty list of strings" if field == "reference" else "a string"
            raise DataError(f"expected {want}", path=path, line=line, field=field)
        out[key] = value
    if not out:
        raise DataError("no rows", path=path)
    return out


def _aligned(refs: dict[str, Any], preds: dict[str, str], path: Path) -> list[str]:
    missing = [k for k in refs if k not in preds]
    extra = [k for k in preds if k not in refs]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} reference ids have no prediction (first: {missing[0]!r})")
        if extra:
            parts.append(f"{len(extra)} predictions have no reference (first: {extra[0]!r})")
        raise DataError("; ".join(parts), path=path)
    return [preds[k] for k in refs]


def score_files(task: str, predictions: Path, references: Path, baseline: Path | None = None, *,
                resamples: int = 1000, seed: int = 0, level: float = 0.95,
                min_count: int = MIN_TEST_EXAMPLES) -> dict[str, Any]:
    """Score a prediction file against references, optionally against a baseline's predictions too.

    Args:
        task: classification, qa, summarization or generation (picks the metrics).
        predictions: JSONL with ``id`` and ``prediction``.
        references: JSONL with ``id`` and ``reference``.
        baseline: Optional second prediction file, compared pairwise.
        resamples: Bootstrap and permutation resamples.
        seed: Seed of both.
        level: Confidence level.
        min_count: Fewest examples a bootstrap interval is given for (below it: exact intervals for
            proportions, none for other metrics).

    Returns:
        ``{"task", "count", "metrics": {name: {value, low, high, level}}, "comparison": {...} | None}``.

    Raises:
        DataError: A file is unreadable, or the ids do not match.
        KeyError: Unknown task.
    """
    refs_by_id = _read(references, "reference")
    refs = list(refs_by_id.values())
    preds = _aligned(refs_by_id, _read(predictions, "prediction"), predictions)
    base = _aligned(refs_by_id, _read(baseline, "prediction"), baseline) if baseline else None
    if task == "classification":
        # Free text from any system is mapped onto the label set as the evaluator does.
        labels = sorted({r if isinstance(r, str) else r[0] for r in refs})
        preds = [match_label(p, labels) or "" for p in preds]
        base = [match_label(p, labels) or "" for p in base] if base else None
    names = [m for m in get_task(task).metrics if m in METRICS]
    opts = {"resamples": resamples, "seed": seed, "level": level, "min_count": min_count}
    result: dict[str, Any] = {"task": task, "count": len(refs), "metrics": {}, "comparison": None}
    for name in names:
        result["metrics"][name] = metric_interval(name, preds, refs, **opts).to_dict()
    if base is not None:
        result["comparison"] = {name: compare_paired(name, base, preds, refs, **opts).to_dict() for name in names}
    return result
