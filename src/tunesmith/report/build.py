"""The run's machine-readable report and its verdict."""

from __future__ import annotations

from typing import Any

from tunesmith.config import Config
from tunesmith.evaluate.evaluator import EvalResult
from tunesmith.evaluate.metrics import higher_is_better
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


def verdict_for(metric: str, target: float | None, tuned: float, baseline: float | None) -> tuple[str, str]:
    """``met`` or ``not met`` and a sentence that says why.

    With a target, the tuned primary metric must reach it; without one, it must beat the baseline.
    """
    up = higher_is_better(metric)
    if target is not None:
        ok = tuned >= target if up else tuned <= target
        cmp = ">=" if up else "<="
        return ("met" if ok else "not met"), f"tuned {metric} {tuned:.4f} {'' if ok else 'not '}{cmp} target {target:g}"
    if baseline is None:
        return "not met", "no target and no baseline to compare with"
    ok = tuned > baseline if up else tuned < baseline
    word = "beats" if ok else "does not beat"
    return ("met" if ok else "not met"), f"no target set: tuned {metric} {tuned:.4f} {word} the baseline's {baseline:.4f}"


def build_report(*, cfg: Config, run_id: str, model_info: dict[str, Any], data: dict[str, Any],
                 baseline: EvalResult | None, tuned: EvalResult, train: TrainResult | None,
                 timings: dict[str, float]) -> dict[str, Any]:
    """Assemble ``report.json``.

    Args:
        cfg: The resolved config.
        run_id: The run's id.
        model_info: Base model name, path and precision.
        data: Split counts, format, labels and hashes.
        baseline: The untuned model's evaluation, if run.
        tuned: The tuned model's evaluation.
        train: The training measurements, if trained in this run.
        timings: Wall seconds of each pipeline step.

    Returns:
        A JSON-serialisable dict.
    """
    metric = cfg.objective.primary_metric
    b_val = baseline.metrics.get(metric) if baseline else None
    verdict, why = verdict_for(metric, cfg.objective.target, tuned.metrics[metric], b_val)
    return {
        "run_id": run_id,
        "project": cfg.project.name,
        "objective": {"task": cfg.objective.task, "metric": metric, "target": cfg.objective.target,
                      "higher_is_better": higher_is_better(metric)},
        "verdict": verdict,
        "verdict_reason": why,
        "model": model_info,
        "adapter": cfg.adapter.model_dump(mode="json"),
        "data": data,
        "baseline": None if baseline is None else {"metrics": baseline.metrics, "seconds": baseline.seconds},
        "tuned": {"metrics": tuned.metrics, "seconds": tuned.seconds},
        "comparison": compare_metrics(baseline.metrics if baseline else None, tuned.metrics),
        "train": None if train is None else train.summary(),
        "timings": timings,
    }
