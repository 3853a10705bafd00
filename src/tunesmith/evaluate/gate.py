"""The promotion gate: does a candidate replace production? Decided by the evaluator's own paired statistics.

Each test set the two models were both evaluated on gives a :class:`PairedComparison` (candidate
minus production, same examples, the paired interval and test of :func:`compare_paired`). A set
asking for ``better`` needs the interval of the difference wholly above 0 (significant); one
asking for ``not_worse`` needs its lower end above minus the margin (non-inferiority, as in a
clinical trial: the interval rules out a loss bigger than the margin). Forgetting warnings and
fairness flags of the candidate veto it where the gate says so. Every check is kept with its
reason, passed or not, so a refused candidate says why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from tunesmith.config import GateConfig
from tunesmith.evaluate.intervals import PairedComparison

Requirement = Literal["better", "not_worse"]


@dataclass(frozen=True)
class GateCheck:
    """One condition of the gate.

    Attributes:
        name: ``fresh``, ``frozen`` (a test set), ``forgetting`` or ``fairness``.
        passed: Whether it holds.
        reason: Why, with the figures.
    """

    name: str
    passed: bool
    reason: str


@dataclass(frozen=True)
class GateDecision:
    """Whether the candidate is promoted, and every check behind it."""

    promote: bool
    checks: list[GateCheck] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        """The failed checks' reasons (empty when promoted)."""
        return [c.reason for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"promote": self.promote, "checks": [asdict(c) for c in self.checks]}


def check_set(name: str, comparison: PairedComparison, requirement: Requirement, margin: float,
              higher_is_better: bool = True) -> GateCheck:
    """One test set's check: ``better`` or ``not_worse`` by ``margin``, on the candidate-minus-production interval."""
    d = comparison.diff
    sign = 1 if higher_is_better else -1
    value = sign * d.value
    low = None if d.low is None else (sign * d.low if higher_is_better else sign * d.high)  # type: ignore[operator]
    high = None if d.high is None else (sign * d.high if higher_is_better else sign * d.low)  # type: ignore[operator]
    shown = (f"{comparison.metric} {comparison.tuned.value:.4f} vs production {comparison.baseline.value:.4f}, "
             f"difference {value:+.4f}" + (f" [{low:+.4f}, {high:+.4f}]" if low is not None else " (no interval)")
             + f", p = {comparison.p_value:.3g}, {comparison.count} examples")
    if requirement == "better":
        passed = comparison.significant and value > 0
        verdict = "significantly better" if passed else "not significantly better"
    elif low is None:
        passed, verdict = False, "cannot show it is not worse (too few examples for an interval)"
    else:
        passed = low > -margin
        verdict = (f"not worse by more than {margin:g}" if passed else
                   f"may be worse by more than {margin:g} (the interval reaches {low:+.4f})")
    return GateCheck(name, passed, f"{name} test set: {verdict}: {shown}")


def decide(comparisons: Mapping[str, PairedComparison], gate: GateConfig, *, forgetting_warnings: Sequence[str] = (),
           fairness_flagged: Sequence[str] = (), higher_is_better: bool = True) -> GateDecision:
    """The gate's decision on the candidate.

    Args:
        comparisons: Test-set name (``fresh``, ``frozen``) -> candidate (as ``tuned``) against production
            (as ``baseline``) on that set.
        gate: What each set must show, the margin, the vetoes.
        forgetting_warnings: The candidate's forgetting warnings.
        fairness_flagged: Fairness groups of the candidate below the ratio.
        higher_is_better: The primary metric's direction.

    Returns:
        Promote only when every check passes.
    """
    checks = [check_set(name, comparisons[name], getattr(gate, name), gate.margin, higher_is_better)
              for name in ("fresh", "frozen") if name in comparisons]
    if gate.forgetting_veto:
        checks.append(GateCheck("forgetting", not forgetting_warnings,
                                "forgetting check: " + ("; ".join(forgetting_warnings) or "no warning")))
    if gate.fairness_veto:
        checks.append(GateCheck("fairness", not fairness_flagged,
                                "fairness: " + (f"groups below the ratio: {', '.join(fairness_flagged)}"
                                                if fairness_flagged else "no group below the ratio")))
    return GateDecision(bool(checks) and all(c.passed for c in checks), checks)
