"""Baseline versus tuned on the same test examples: intervals, significance, the verdict, slices, errors."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from tunesmith.evaluate.metrics import METRICS, higher_is_better
from tunesmith.evaluate.stats import MIN_TEST_EXAMPLES, Interval, PairedComparison, compare_paired, metric_interval

Row = dict[str, Any]


def references(rows: Sequence[Row], task: str) -> list[Any]:
    """What each prediction is scored against: the label of a classification row, else the reference answer.

    A row's own ``task_type`` (rows of a ``data.mix`` run) wins over the run's ``task``.
    """
    return [r["label"] if r.get("task_type", task) == "classification" else r["reference"] for r in rows]


def paired_comparisons(task: str, metrics: Sequence[str], baseline: Sequence[Row], tuned: Sequence[Row], *,
                       resamples: int, seed: int, level: float,
                       min_count: int = MIN_TEST_EXAMPLES) -> dict[str, PairedComparison]:
    """A paired comparison for each registered metric (loss and perplexity have no per-example form).

    Raises:
        ValueError: The two prediction lists are not for the same examples in the same order.
    """
    if [r["id"] for r in baseline] != [r["id"] for r in tuned]:
        raise ValueError("baseline and tuned predictions are not for the same examples in the same order")
    refs = references(tuned, task)
    b_preds, t_preds = [r["prediction"] for r in baseline], [r["prediction"] for r in tuned]
    return {m: compare_paired(m, b_preds, t_preds, refs, resamples=resamples, seed=seed, level=level, min_count=min_count)
            for m in metrics if m in METRICS}


def tuned_interval(task: str, metric: str, tuned: Sequence[Row], *, resamples: int, seed: int,
                   level: float, min_count: int = MIN_TEST_EXAMPLES) -> Interval | None:
    """The tuned metric's interval alone (no baseline), or None for loss and perplexity."""
    if metric not in METRICS:
        return None
    return metric_interval(metric, [r["prediction"] for r in tuned], references(tuned, task),
                           resamples=resamples, seed=seed, level=level, min_count=min_count)


def verdict(metric: str, target: float | None, tuned: float, interval: Interval | None,
            comparison: PairedComparison | None, baseline: float | None, *, count: int | None = None,
            min_count: int = MIN_TEST_EXAMPLES) -> tuple[str, str]:
    """``met``, ``not met`` or ``inconclusive``, and a sentence that says why.

    With a target, the tuned metric's interval decides: entirely on the good side of the target
    is met, entirely on the bad side is not met, straddling it is inconclusive. Without a target
    the paired comparison with the baseline decides: "met" needs a significant improvement (and
    its interval, when there is one, excludes 0 exactly then). Without an interval because the
    test set is too small, the verdict is inconclusive; for loss and perplexity (no per-example
    form) the point values decide.

    Args:
        metric: The primary metric.
        target: The objective's target, or None to beat the baseline.
        tuned: The tuned model's value.
        interval: The tuned value's interval (None for loss and perplexity).
        comparison: The paired comparison with the baseline, if there is a baseline.
        baseline: The baseline's value, if there is a baseline.
        count: Test examples scored; below ``min_count`` the reason says the test set is small.
        min_count: The minimum test size (``eval.min_test_examples``).
    """
    up = higher_is_better(metric)
    small = count is not None and count < min_count
    few = f" (only {count} test examples, under the minimum of {min_count})" if small else ""
    pct = f"{round(100 * interval.level)}%" if interval else ""
    kind = {"exact": " exact", "bootstrap": "", "permutation": ""}.get(interval.method, "") if interval else ""
    if target is not None:
        if interval is None:
            ok = tuned >= target if up else tuned <= target
            return ("met" if ok else "not met"), f"tuned {metric} {tuned:.4f} {'reaches' if ok else 'misses'} target {target:g} (no interval for {metric})"
        if not interval.known:
            return "inconclusive", (f"tuned {metric} {tuned:.4f}, but {count} test examples are too few for an interval of "
                                    f"{metric} (at least {min_count} are needed), so the target {target:g} cannot be judged")
        good, bad = (interval.low >= target, interval.high < target) if up else (interval.high <= target, interval.low > target)
        span = f"tuned {metric} {tuned:.4f}, {pct}{kind} interval [{interval.low:.4f}, {interval.high:.4f}]{few}"
        if good:
            return "met", f"{span} is entirely on the good side of target {target:g}"
        if bad:
            return "not met", f"{span} is entirely on the wrong side of target {target:g}"
        return "inconclusive", f"{span} contains target {target:g}: more test examples are needed to tell"
    if baseline is None:
        return "not met", "no target and no baseline to compare with"
    if comparison is None:
        ok = tuned > baseline if up else tuned < baseline
        return ("met" if ok else "not met"), f"no target set: tuned {metric} {tuned:.4f} vs baseline {baseline:.4f} (no interval for {metric})"
    d = comparison.diff
    better = d.value > 0 if up else d.value < 0
    span = f"no target set: tuned minus baseline {metric} {d.value:+.4f}"
    if d.known:
        span += f", {pct} interval [{d.low:+.4f}, {d.high:+.4f}]"
    span += f", p = {comparison.p_value:.3g} ({comparison.test}){few}"
    if comparison.significant and d.value != 0:
        return ("met", f"{span}: significantly better than the baseline") if better else \
            ("not met", f"{span}: significantly worse than the baseline")
    if comparison.smallest_p is not None and comparison.smallest_p >= round(1 - comparison.diff.level, 12):
        return "inconclusive", (f"{span}: with these test examples no difference could be significant (the smallest "
                                f"possible p is {comparison.smallest_p:.3g}); more test examples are needed")
    return "inconclusive", f"{span}: not a significant difference"


def slice_breakdown(task: str, metric: str, baseline: Sequence[Row] | None, tuned: Sequence[Row],
                    fields: Sequence[str]) -> list[dict[str, Any]]:
    """The metric per value of each slicing field (``label`` or a metadata column), worst change first.

    Returns:
        One row per slice: field, value, count, baseline, tuned and change; slices that got worse
        come first, then by tuned value.
    """
    fn = METRICS[metric].fn
    refs = references(tuned, task)
    out = []
    for field in fields:
        groups: dict[str, list[int]] = defaultdict(list)
        for i, row in enumerate(tuned):
            value = row["label"] if field == "label" else (row.get("meta") or {}).get(field)
            if value is not None:
                groups[str(value)].append(i)
        for value, idx in groups.items():
            t = fn([tuned[i]["prediction"] for i in idx], [refs[i] for i in idx])
            b = fn([baseline[i]["prediction"] for i in idx], [refs[i] for i in idx]) if baseline else None
            out.append({"field": field, "value": value, "count": len(idx), "baseline": b, "tuned": t,
                        "change": None if b is None else t - b})
    sign = 1 if higher_is_better(metric) else -1
    return sorted(out, key=lambda s: (sign * (s["change"] or 0.0), sign * s["tuned"]))


def error_analysis(baseline: Sequence[Row] | None, tuned: Sequence[Row], limit: int = 10,
                   margin: float = 0.05) -> dict[str, Any]:
    """Test examples that regressed, improved, or stayed wrong, by the per-example score.

    The groups are disjoint: a change of more than ``margin`` is an improvement or a
    regression; otherwise an example scoring under 0.5 with both models stayed wrong.

    Returns:
        Counts and up to ``limit`` examples of each group, largest changes first.
    """
    if not baseline:
        wrong = [r for r in tuned if r["score"] < 0.5]
        return {"counts": {"wrong": len(wrong)}, "wrong": wrong[:limit]}
    pairs = list(zip(baseline, tuned))
    regressed = sorted((p for p in pairs if p[1]["score"] < p[0]["score"] - margin), key=lambda p: p[1]["score"] - p[0]["score"])
    improved = sorted((p for p in pairs if p[1]["score"] > p[0]["score"] + margin), key=lambda p: p[0]["score"] - p[1]["score"])
    still_wrong = [p for p in pairs if abs(p[1]["score"] - p[0]["score"]) <= margin and p[1]["score"] < 0.5]

    def said(row: Row) -> str:
        """The parsed answer, or what the model said when it names no label (a blank cell would hide it)."""
        if row["prediction"] or not row.get("output"):
            return row["prediction"]
        return f"(no label) {row['output']}"

    def show(group: list[tuple[Row, Row]]) -> list[dict[str, Any]]:
        return [{"id": t["id"], "input": t["input"], "reference": t["reference"], "baseline": said(b),
                 "tuned": said(t), "baseline_score": b["score"], "tuned_score": t["score"]} for b, t in group[:limit]]

    return {"counts": {"regressed": len(regressed), "improved": len(improved), "still_wrong": len(still_wrong)},
            "regressed": show(regressed), "improved": show(improved), "still_wrong": show(still_wrong)}


def confusion(labels: Sequence[str], rows: Sequence[Row]) -> list[list[int]]:
    """Counts of (reference label, predicted label) with a last column for answers that named no label."""
    index = {lab: i for i, lab in enumerate(labels)}
    matrix = [[0] * (len(labels) + 1) for _ in labels]
    for r in rows:
        if r["label"] in index:
            matrix[index[r["label"]]][index.get(r["prediction"], len(labels))] += 1
    return matrix
