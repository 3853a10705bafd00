"""Label-free accuracy: what the model's own label probabilities say about live traffic, before anyone labels it.

Confidence-based performance estimation (NannyML's CBPE, for accuracy): the probabilities the
server returns (constrained decoding's label probability, or the classification head's) are
calibrated on the run's own test split (isotonic regression of "was it right" on the
probability, scikit-learn), and the estimated accuracy of live answers is the mean calibrated
probability. Its interval adds the two uncertainties: which answers were right, given their
probabilities (a sum of independent Bernoulli variables), and the calibration itself (the test
split bootstrapped and the calibration refitted). It holds while the relation between
probability and correctness holds: under concept drift (the same inputs now wanting other
labels) no label-free estimate can see the change, which is why feedback is monitored too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.isotonic import IsotonicRegression


@dataclass(frozen=True)
class Calibration:
    """The test split's probabilities and whether each answer was right (what the estimate is fitted on)."""

    probabilities: np.ndarray
    correct: np.ndarray

    @property
    def accuracy(self) -> float:
        """Accuracy on the test split (the reference the live estimate is compared with)."""
        return float(self.correct.mean()) if len(self.correct) else float("nan")

    @classmethod
    def from_predictions(cls, rows: Sequence[dict]) -> Calibration | None:
        """From a run's ``predictions/tuned.jsonl`` rows (``confidence`` and ``score``); None without probabilities."""
        pairs = [(r["confidence"], r["score"]) for r in rows if r.get("confidence") is not None]
        if not pairs:
            return None
        p, c = zip(*pairs)
        return cls(np.asarray(p, float), np.asarray(c, float))


@dataclass(frozen=True)
class AccuracyEstimate:
    """Estimated accuracy of live answers.

    Attributes:
        value: The estimate.
        low: Lower end of its interval.
        high: Upper end.
        reference: Accuracy on the test split.
        count: Live answers it covers.
    """

    value: float
    low: float
    high: float
    reference: float
    count: int


def _fit(p: np.ndarray, c: np.ndarray) -> IsotonicRegression:
    return IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True).fit(p, c)


def estimate_accuracy(calibration: Calibration, live: Sequence[float], *, level: float = 0.95, resamples: int = 200,
                      seed: int = 0) -> AccuracyEstimate:
    """Estimated accuracy of answers given with probabilities ``live``.

    Args:
        calibration: The test split's probabilities and correctness.
        live: Each live answer's probability.
        level: Confidence level of the interval.
        resamples: Bootstrap refits of the calibration.
        seed: Seed of the bootstrap.

    Raises:
        ValueError: No live probabilities.
    """
    q = np.asarray(live, float)
    if not len(q):
        raise ValueError("no live answers with a probability")
    expected = _fit(calibration.probabilities, calibration.correct).predict(q)
    value = float(expected.mean())
    rng = np.random.default_rng(seed)
    n = len(calibration.probabilities)
    refits = []
    for _ in range(resamples):
        idx = rng.integers(0, n, n)
        refits.append(_fit(calibration.probabilities[idx], calibration.correct[idx]).predict(q).mean())
    outcome_var = float(np.sum(expected * (1 - expected))) / len(q) ** 2
    se = float(np.sqrt(np.var(refits) + outcome_var))
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + level / 2))
    return AccuracyEstimate(value, max(0.0, value - z * se), min(1.0, value + z * se), calibration.accuracy, len(q))
