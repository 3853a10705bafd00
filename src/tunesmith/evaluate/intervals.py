"""The records of an interval and of a paired comparison: what :mod:`tunesmith.evaluate.stats` computes and
``report.json`` stores (kept apart from the statistics so that readers of reports need no numerical stack)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval (or none, with the reason).

    Attributes:
        value: The metric on the whole test set.
        low: Lower end of the interval; None when no interval can be trusted (see ``method``).
        high: Upper end of the interval; None with ``low``.
        level: Confidence level, e.g. 0.95.
        method: How the interval was computed: ``bootstrap`` (percentile), ``exact`` (Clopper-Pearson for a
            proportion), ``permutation`` (the paired permutation test inverted: every shift it does not
            reject), or ``none`` (too few test examples for any of these).
    """

    value: float
    low: float | None
    high: float | None
    level: float
    method: str = "bootstrap"

    @property
    def known(self) -> bool:
        """Whether there is an interval at all."""
        return self.low is not None and self.high is not None

    def excludes(self, point: float) -> bool:
        """Whether the interval lies entirely on one side of ``point`` (False without an interval)."""
        return self.known and (self.low > point or self.high < point)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Interval":
        """The inverse of :meth:`to_dict` (reports written before ``method`` existed were bootstraps)."""
        return cls(d["value"], d.get("low"), d.get("high"), d["level"], d.get("method", "bootstrap"))

    def span(self, signed: bool = False) -> str:
        """``[low, high]`` to 4 decimals, marked ``exact`` where it is; ``none (too few examples)`` without one."""
        if not self.known:
            return "none (too few examples)"
        fmt = "{:+.4f}" if signed else "{:.4f}"
        text = f"[{fmt.format(self.low)}, {fmt.format(self.high)}]"
        return f"{text} exact" if self.method == "exact" else text


@dataclass(frozen=True)
class PairedComparison:
    """Tuned minus baseline on the same examples.

    The interval of the difference and the test never contradict each other: ``significant`` is
    ``p_value < 1 - level``, and the difference's interval excludes 0 exactly when it is.

    Attributes:
        metric: The metric compared.
        baseline: Baseline value with its interval.
        tuned: Tuned value with its interval.
        diff: Tuned minus baseline, with the interval of the paired difference (``method`` says which).
        p_value: Two-sided p-value of ``test``.
        significant: ``p_value < 1 - level``.
        test: The test: ``exact McNemar``, ``exact permutation``, ``permutation`` (random sign flips),
            ``paired bootstrap`` or ``approximate randomization``.
        count: Test examples compared.
        smallest_p: The smallest p-value the test could give with these examples (with very few
            examples even a perfect improvement cannot be significant); None where not computed.
    """

    metric: str
    baseline: Interval
    tuned: Interval
    diff: Interval
    p_value: float
    significant: bool
    test: str = "approximate randomization"
    count: int = 0
    smallest_p: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return {"metric": self.metric, "baseline": self.baseline.to_dict(), "tuned": self.tuned.to_dict(),
                "diff": self.diff.to_dict(), "p_value": self.p_value, "significant": self.significant,
                "test": self.test, "count": self.count, "smallest_p": self.smallest_p}
