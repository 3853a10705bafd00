"""The records of an interval and of a paired comparison: what :mod:`tunesmith.evaluate.stats` computes and
``report.json`` stores (kept apart from the statistics so that readers of reports need no numerical stack)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile bootstrap interval.

    Attributes:
        value: The metric on the whole test set.
        low: Lower end of the interval.
        high: Upper end of the interval.
        level: Confidence level, e.g. 0.95.
    """

    value: float
    low: float
    high: float
    level: float

    def to_dict(self) -> dict[str, float]:
        """A JSON-serialisable dict."""
        return asdict(self)


@dataclass(frozen=True)
class PairedComparison:
    """Tuned minus baseline on the same examples.

    Attributes:
        metric: The metric compared.
        baseline: Baseline value with its interval.
        tuned: Tuned value with its interval.
        diff: Tuned minus baseline, with the interval of the paired difference.
        p_value: Two-sided p-value of the paired permutation (approximate randomisation) test.
        significant: ``p_value < 1 - level`` and the interval of the difference excludes 0.
    """

    metric: str
    baseline: Interval
    tuned: Interval
    diff: Interval
    p_value: float
    significant: bool

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return {"metric": self.metric, "baseline": self.baseline.to_dict(), "tuned": self.tuned.to_dict(),
                "diff": self.diff.to_dict(), "p_value": self.p_value, "significant": self.significant}
