"""How far a model's confidence can be trusted: expected calibration error and the reliability diagram's bins.

A classification answer decoded within the label set comes with the probability of the chosen
label (:mod:`tunesmith.inference.constrained`). Calibrated, answers given with confidence 0.8 are
right 80% of the time; the expected calibration error is the gap between confidence and accuracy
averaged over equal-width confidence bins, weighted by how many answers fall in each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def calibration(confidences: Sequence[float], correct: Sequence[bool], bins: int = 10) -> dict[str, Any]:
    """Expected calibration error and the per-bin figures of a reliability diagram.

    Args:
        confidences: Each answer's probability of its chosen label, in [0, 1].
        correct: Whether each answer was right.
        bins: Equal-width confidence bins.

    Returns:
        ``{"ece", "count", "mean_confidence", "accuracy", "bins": [{low, high, count, confidence, accuracy}]}``
        (empty bins are left out).

    Raises:
        ValueError: The two lists differ in length or are empty.
    """
    if len(confidences) != len(correct) or not confidences:
        raise ValueError("calibration needs one confidence per answer, and at least one answer")
    n = len(confidences)
    rows = []
    ece = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        members = [i for i, c in enumerate(confidences) if low <= c < high or (b == bins - 1 and c == 1.0)]
        if not members:
            continue
        conf = sum(confidences[i] for i in members) / len(members)
        acc = sum(bool(correct[i]) for i in members) / len(members)
        ece += len(members) / n * abs(acc - conf)
        rows.append({"low": low, "high": high, "count": len(members), "confidence": conf, "accuracy": acc})
    return {"ece": ece, "count": n, "mean_confidence": sum(confidences) / n,
            "accuracy": sum(map(bool, correct)) / n, "bins": rows}


def answer_agreement(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """How often the constrained answer and the free answer (mapped onto the labels) differ, on rows with both."""
    both = [r for r in rows if "unconstrained" in r]
    if not both:
        return None
    differ = [r for r in both if r["unconstrained"] != r["prediction"]]
    return {"rows": len(both), "differ": len(differ), "free_named_no_label": sum(1 for r in both if not r["unconstrained"])}
