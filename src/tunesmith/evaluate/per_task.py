"""Multi-task runs (``data.mix``): how each test row is scored, and the metrics per task tag.

A run has one objective (task type and primary metric); a mix may hold sources of other types
(``task_type`` per source). Each test row is scored as its own task type: a classification row's
output is matched to its task's labels and compared with its label, any other row's output is
compared with its reference answer. The headline metrics apply the objective's metrics to every
row scored that way; the per-task breakdown scores each task with its own type's metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tunesmith.data.examples import Example
from tunesmith.evaluate.analysis import paired_comparisons, references, tuned_interval
from tunesmith.evaluate.metrics import compute_metrics
from tunesmith.evaluate.stats import MIN_TEST_EXAMPLES
from tunesmith.tasks import get_task

Row = dict[str, Any]


def scoring(example: Example, task: str, labels: list[str] | None,
            tasks: dict[str, dict[str, Any]] | None) -> tuple[str, list[str] | None]:
    """The task type an example is scored as, and the labels its output is matched to.

    Args:
        example: A test example (``meta["task"]`` set in a mix).
        task: The objective's task type.
        labels: The run's label set.
        tasks: The mix's tasks (``Splits.tasks``); empty or None for a single dataset.

    Returns:
        The example's task's type and labels in a mix, else the objective's task and the run's labels.
    """
    info = (tasks or {}).get(example.meta.get("task"))
    return (info["type"], info.get("labels")) if info else (task, labels)


def task_metric(task_type: str, primary: str) -> str:
    """The metric that leads a task: the objective's primary metric where it applies to the task's type, else its default."""
    task = get_task(task_type)
    return primary if primary in task.allowed_metrics else task.primary_metric


def _rows_of(rows: Sequence[Row], tag: str) -> list[int]:
    return [i for i, r in enumerate(rows) if (r.get("meta") or {}).get("task") == tag]


def metrics_by_task(rows: Sequence[Row], tasks: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each task's own metrics (its type's default set) on its rows; tasks without test rows are left out."""
    out = {}
    for tag, info in tasks.items():
        mine = [rows[i] for i in _rows_of(rows, tag)]
        if mine:
            out[tag] = compute_metrics(info["type"], [r["prediction"] for r in mine], references(mine, info["type"]))
    return out


def per_task(tasks: dict[str, dict[str, Any]], baseline: Sequence[Row] | None, tuned: Sequence[Row], primary: str, *,
             resamples: int, seed: int, level: float, min_count: int = MIN_TEST_EXAMPLES) -> list[dict[str, Any]]:
    """Baseline versus tuned for each task of a mix, every metric with its bootstrap interval.

    Args:
        tasks: The mix's tasks (``Splits.tasks``): type and weight per tag.
        baseline: The baseline's prediction rows (same examples and order as ``tuned``), or None.
        tuned: The tuned model's prediction rows.
        primary: The objective's primary metric.
        resamples: Bootstrap and permutation resamples.
        seed: Seed of the resampling.
        level: Confidence level.
        min_count: Fewest test examples a bootstrap interval is given for.

    Returns:
        One entry per task: tag, type, weight, test count, its leading metric, and per metric
        either a paired comparison (``baseline``, ``tuned``, ``diff`` intervals, ``p_value``,
        ``significant``) or, without a baseline, the tuned interval alone.
    """
    out = []
    for tag, info in tasks.items():
        idx = _rows_of(tuned, tag)
        kind = info["type"]
        entry: dict[str, Any] = {"task": tag, "type": kind, "weight": info.get("weight"), "count": len(idx),
                                 "metric": task_metric(kind, primary), "metrics": {}}
        if idx:
            mine = [tuned[i] for i in idx]
            opts = {"resamples": resamples, "seed": seed, "level": level, "min_count": min_count}
            if baseline:
                comps = paired_comparisons(kind, get_task(kind).metrics, [baseline[i] for i in idx], mine, **opts)
                entry["metrics"] = {m: c.to_dict() for m, c in comps.items()}
            else:
                entry["metrics"] = {m: {"tuned": iv.to_dict()} for m in get_task(kind).metrics
                                    if (iv := tuned_interval(kind, m, mine, **opts)) is not None}
        out.append(entry)
    return out
