"""The run's machine-readable report and its verdict."""

from __future__ import annotations

from typing import Any

from tunesmith.config import Config
from tunesmith.evaluate.analysis import confusion, error_analysis, paired_comparisons, slice_breakdown, tuned_interval, verdict
from tunesmith.evaluate.calibration import answer_agreement, calibration
from tunesmith.evaluate.evaluator import EvalResult
from tunesmith.evaluate.metrics import METRICS, higher_is_better
from tunesmith.evaluate.per_task import per_task
from tunesmith.report.schema import RunReport
from tunesmith.train.loop import TrainResult


def compare_metrics(baseline: dict[str, float] | None, tuned: dict[str, float]) -> dict[str, dict[str, float | None]]:
    """Per metric: baseline, tuned, absolute change and relative change (None where undefined)."""
    out: dict[str, dict[str, float | None]] = {}
    for name, t in tuned.items():
        b = (baseline or {}).get(name)
        diff = None if b is None else t - b
        rel = None if b in (None, 0) else diff / abs(b)
        out[name] = {"baseline": b, "tuned": t, "abs_change": diff, "rel_change": rel,
                     "higher_is_better": higher_is_better(name)}
    return out


def calibration_section(baseline: EvalResult | None, tuned: EvalResult) -> dict[str, Any] | None:
    """Per model: calibration of the constrained answers' confidence, and how often the free answer differed."""
    out = {}
    for name, result in (("baseline", baseline), ("tuned", tuned)):
        rows = [r for r in (result.predictions if result else []) if "confidence" in r]
        if rows:
            out[name] = {**calibration([r["confidence"] for r in rows], [r["score"] >= 1 for r in rows]),
                         "agreement": answer_agreement(rows)}
    return out or None


def build_report(*, cfg: Config, run_id: str, model_info: dict[str, Any], data: dict[str, Any],
                 baseline: EvalResult | None, tuned: EvalResult, train: TrainResult | None,
                 timings: dict[str, float]) -> RunReport:
    """Assemble ``report.json``.

    Args:
        cfg: The resolved config.
        run_id: The run's id.
        model_info: Base model name, path and precision.
        data: Split counts, format, labels and hashes; ``tasks`` (a ``data.mix`` run's tasks) adds the per-task section.
        baseline: The untuned model's evaluation, if run.
        tuned: The tuned model's evaluation.
        train: The training measurements, if trained in this run.
        timings: Wall seconds of each pipeline step.

    Returns:
        The report, as ``report.json`` stores it.
    """
    metric, task, ev = cfg.objective.primary_metric, cfg.objective.task, cfg.eval
    b_val = baseline.metrics.get(metric) if baseline else None
    opts = {"resamples": ev.bootstrap_resamples, "seed": cfg.project.seed, "level": ev.confidence,
            "min_count": ev.min_test_examples}
    scored = [m for m in tuned.metrics if m in METRICS]
    comparisons = paired_comparisons(task, scored, baseline.predictions, tuned.predictions, **opts) if baseline else {}
    interval = comparisons[metric].tuned if metric in comparisons else tuned_interval(task, metric, tuned.predictions, **opts)
    result, why = verdict(metric, cfg.objective.target, tuned.metrics[metric], interval, comparisons.get(metric), b_val,
                          count=len(tuned.predictions), min_count=ev.min_test_examples)
    slice_metric = metric if metric in METRICS else scored[0]
    tasks = data.get("tasks") or {}
    # A mix is broken down by task without being asked; per_task below has each task's own metrics.
    slice_by = [*ev.slice_by, *(["task"] if tasks and "task" not in ev.slice_by else [])]
    return RunReport.model_validate({
        "run_id": run_id,
        "project": cfg.project.name,
        "objective": {"task": cfg.objective.task, "metric": metric, "target": cfg.objective.target,
                      "higher_is_better": higher_is_better(metric)},
        "verdict": result,
        "verdict_reason": why,
        "min_test_examples": ev.min_test_examples,
        "interval": None if interval is None else interval.to_dict(),
        "model": model_info,
        "adapter": cfg.adapter.model_dump(mode="json"),
        "data": data,
        "baseline": None if baseline is None else {"metrics": baseline.metrics, "seconds": baseline.seconds},
        "tuned": {"metrics": tuned.metrics, "seconds": tuned.seconds},
        "comparison": compare_metrics(baseline.metrics if baseline else None, tuned.metrics),
        "significance": {m: c.to_dict() for m, c in comparisons.items()},
        "slices": {"metric": slice_metric,
                   "rows": slice_breakdown(task, slice_metric, baseline.predictions if baseline else None,
                                           tuned.predictions, slice_by)},
        "per_task": per_task(tasks, baseline.predictions if baseline else None, tuned.predictions, metric, **opts)
        if tasks else None,
        "errors": error_analysis(baseline.predictions if baseline else None, tuned.predictions),
        "calibration": calibration_section(baseline, tuned),
        "confusion": None if not data.get("labels") else {
            "labels": data["labels"], **({"baseline": confusion(data["labels"], baseline.predictions)} if baseline else {}),
            "tuned": confusion(data["labels"], tuned.predictions)},
        "train": None if train is None else train.summary(),
        "timings": timings,
    })
