"""Honesty about noise: confidence intervals and paired significance tests that never contradict each other.

Which method serves depends on the metric and on how many test examples there are:

* One model's metric: a percentile bootstrap over the test examples from ``min_count`` examples on;
  below that, the exact Clopper-Pearson interval where the metric is a proportion (accuracy,
  exact match), and no interval at all otherwise (a bootstrap of a handful of rows is meaningless).
* Tuned minus baseline, for metrics that are means of per-example scores: a paired permutation
  test (sign flips of the per-example differences; exact by enumeration for up to
  :data:`EXACT_UP_TO` differing examples, and for 0/1 scores the exact McNemar test at any size)
  and, as the interval, every shift of the difference that test does not reject. Interval and test
  are one procedure, so the interval excludes 0 exactly when p < 1 - level.
* Tuned minus baseline, for corpus metrics (macro F1, BLEU, chrF): a paired bootstrap (both
  systems scored on the same resamples, as ``sacrebleu``'s paired bootstrap does) whose p-value
  is read off the same resamples; below ``min_count`` examples only the approximate randomisation
  test, with no interval.

Metrics with sufficient statistics (P/R/F1 from confusion counts, BLEU and chrF from n-gram
statistics) are resampled as summed statistics; any other metric is recomputed per resample.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

from tunesmith.evaluate.intervals import Interval, PairedComparison
from tunesmith.evaluate.metrics import METRICS, Reference

#: Below this many test examples no bootstrap interval is given (``eval.min_test_examples`` overrides it).
MIN_TEST_EXAMPLES = 30
#: Up to this many differing examples the permutation test enumerates every sign pattern (2^16 = 65,536).
EXACT_UP_TO = 16


def _scores(metric: str, preds: Sequence[str], refs: Sequence[Reference], idx: np.ndarray) -> np.ndarray:
    """The metric on each resample (rows of ``idx``)."""
    m = METRICS[metric]
    if m.per_example is not None:
        per = np.asarray(m.per_example(preds, refs), dtype=float)
        return per[idx].mean(axis=1)
    if m.stats is not None and m.from_stats is not None:
        stats = m.stats(preds, refs)
        return np.array([m.from_stats(stats[row].sum(axis=0)) for row in idx])
    return np.array([m.fn([preds[i] for i in row], [refs[i] for i in row]) for row in idx])


def _percentile(value: float, samples: np.ndarray, level: float) -> Interval:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return Interval(float(value), float(low), float(high), level, "bootstrap")


def _small_interval(metric: str, value: float, preds: Sequence[str], refs: Sequence[Reference],
                    level: float) -> Interval:
    """Below the minimum test size: exact for a proportion, else no interval."""
    m = METRICS[metric]
    if m.binary and m.per_example is not None and preds:
        per = np.asarray(m.per_example(preds, refs), dtype=float)
        ci = scipy_stats.binomtest(int(per.sum()), len(per)).proportion_ci(confidence_level=level, method="exact")
        return Interval(float(value), float(ci.low), float(ci.high), level, "exact")
    return Interval(float(value), None, None, level, "none")


def metric_interval(metric: str, preds: Sequence[str], refs: Sequence[Reference], *, resamples: int = 1000,
                    seed: int = 0, level: float = 0.95, min_count: int = MIN_TEST_EXAMPLES) -> Interval:
    """One model's metric with its confidence interval (see the module docstring for the method).

    Args:
        metric: A registered metric.
        preds: Predictions.
        refs: References.
        resamples: Bootstrap resamples.
        seed: Seed of the resampling.
        level: Confidence level.
        min_count: Fewest examples a bootstrap interval is given for.

    Returns:
        The metric and its interval; ``method`` says how it was computed, ``none`` when it could not be.
    """
    n = len(preds)
    value = METRICS[metric].fn(preds, refs)
    if n < min_count:
        return _small_interval(metric, value, preds, refs, level)
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    return _percentile(value, _scores(metric, preds, refs, idx), level)


class _SignFlip:
    """The paired permutation test of a mean difference, as a function of the hypothesised shift.

    Under "the tuned model is better by exactly ``delta`` on average", the per-example differences
    minus ``delta`` are as likely positive as negative; the test compares ``|mean|`` of the
    observed differences with that of the same differences under random (or, when few, every)
    sign patterns. Inverting it over ``delta`` gives the interval.
    """

    def __init__(self, diffs: np.ndarray, resamples: int, rng: np.random.Generator, proportion: bool):
        self.d = diffs
        self.n = len(diffs)
        self.proportion = proportion
        self.exact = self.n <= EXACT_UP_TO
        if self.exact:
            self.signs = np.array(list(itertools.product((1.0, -1.0), repeat=self.n))) if self.n else np.ones((1, 0))
        else:
            self.signs = np.where(rng.random((resamples, self.n)) < 0.5, -1.0, 1.0)

    def p(self, delta: float) -> float:
        """Two-sided p-value of "the mean difference is ``delta``"."""
        x = self.d - delta
        if not np.any(np.abs(x) > 1e-12):
            return 1.0
        if delta == 0 and self.proportion:
            # Differences of 0/1 scores are -1, 0 or +1: the exact sign test on the discordant pairs is McNemar's.
            up, down = int(np.sum(x > 0)), int(np.sum(x < 0))
            return float(scipy_stats.binomtest(up, up + down, 0.5).pvalue)
        observed = abs(x.sum())
        flipped = np.abs(self.signs @ x)
        hits = int(np.sum(flipped >= observed - 1e-9))
        return hits / len(self.signs) if self.exact else (hits + 1) / (len(self.signs) + 1)

    def smallest_p(self) -> float:
        """The smallest p-value the test can give for these examples (all differences of one sign)."""
        k = int(np.sum(np.abs(self.d) > 1e-12))
        if k == 0:
            return 1.0
        if self.proportion or self.exact:
            return min(1.0, 2.0 / 2 ** k)
        return 1 / (len(self.signs) + 1)

    def interval(self, alpha: float, bound: float) -> tuple[float, float]:
        """Every shift in ``[-bound, bound]`` the test does not reject at ``alpha``, as its two ends.

        Bisection between a rejected and an accepted shift; 0 is one of the brackets, so the interval
        contains 0 exactly when the test at 0 does not reject.
        """
        mean = float(self.d.mean())
        if not np.any(np.abs(self.d) > 1e-12):
            return 0.0, 0.0
        zero_ok = self.p(0.0) >= alpha

        def end(outer: float) -> float:
            rejected, accepted = outer, mean
            # 0 lies between the far end and the mean: what the test says there is one bracket.
            if min(outer, mean) < 0 < max(outer, mean):
                if zero_ok:
                    accepted = 0.0
                else:
                    rejected = 0.0
            if rejected == outer and self.p(outer) >= alpha:
                return outer
            for _ in range(40):
                mid = (rejected + accepted) / 2
                if self.p(mid) >= alpha:
                    accepted = mid
                else:
                    rejected = mid
            return accepted

        return end(-bound), end(bound)


@dataclass(frozen=True)
class Shift:
    """The mean of paired differences, tested and bounded by one procedure (:func:`paired_shift`).

    Attributes:
        diff: The mean difference with the interval of every shift the test does not reject.
        p_value: Two-sided p-value of "no difference".
        test: ``exact McNemar``, ``exact permutation`` or ``permutation``.
        smallest_p: The smallest p-value the test could give for these differences.
    """

    diff: Interval
    p_value: float
    test: str
    smallest_p: float


def paired_shift(diffs: Sequence[float] | np.ndarray, *, level: float = 0.95, resamples: int = 1000, seed: int = 0,
                 bound: float = 1.0, proportion: bool = False) -> Shift:
    """The paired permutation test of a mean difference and its inverted interval.

    Args:
        diffs: Per-example differences (after minus before, tuned minus baseline).
        level: Confidence level.
        resamples: Random sign patterns when there are too many examples to enumerate them all.
        seed: Seed of the sign patterns.
        bound: The interval is clipped to ``[-bound, bound]`` (the widest a difference can be).
        proportion: The differences are of 0/1 scores (the test at 0 is then exact McNemar at any size).

    Returns:
        The mean difference, its interval (containing 0 exactly when p >= 1 - level), p and the test's name.
    """
    alpha = round(1 - level, 12)  # 1 - 0.95 is 0.05000000000000004 in floating point
    flip = _SignFlip(np.asarray(diffs, dtype=float), resamples, np.random.default_rng(seed), proportion)
    low, high = (round(end, 9) + 0.0 for end in flip.interval(alpha, bound=bound))  # no "-0.0000" ends
    test = "exact McNemar" if proportion else ("exact permutation" if flip.exact else "permutation")
    mean = float(flip.d.mean()) if flip.n else 0.0
    return Shift(Interval(mean, low, high, level, "permutation"), flip.p(0.0), test, flip.smallest_p())


def compare_paired(metric: str, baseline: Sequence[str], tuned: Sequence[str], refs: Sequence[Reference], *,
                   resamples: int = 1000, seed: int = 0, level: float = 0.95,
                   min_count: int = MIN_TEST_EXAMPLES) -> PairedComparison:
    """Tuned versus baseline on the same examples: both intervals, the difference's, and a paired test.

    Args:
        metric: A registered metric.
        baseline: Baseline predictions.
        tuned: Tuned predictions, for the same examples in the same order.
        refs: References.
        resamples: Resamples for the bootstrap and for the random permutations.
        seed: Seed of both.
        level: Confidence level.
        min_count: Fewest examples a bootstrap interval is given for.

    Returns:
        The comparison; its interval of the difference excludes 0 exactly when it is significant.

    Raises:
        ValueError: The prediction lists differ in length from the references.
    """
    n = len(refs)
    if len(baseline) != n or len(tuned) != n:
        raise ValueError("baseline, tuned and references must have the same length")
    m = METRICS[metric]
    alpha = round(1 - level, 12)  # 1 - 0.95 is 0.05000000000000004 in floating point
    opts = {"resamples": resamples, "seed": seed, "level": level, "min_count": min_count}
    b_iv, t_iv = metric_interval(metric, baseline, refs, **opts), metric_interval(metric, tuned, refs, **opts)
    diff_value = t_iv.value - b_iv.value
    rng = np.random.default_rng(seed)
    if m.per_example is not None:
        pb, pt = np.asarray(m.per_example(baseline, refs), float), np.asarray(m.per_example(tuned, refs), float)
        shift = paired_shift(pt - pb, level=level, resamples=resamples, seed=seed, bound=m.scale, proportion=m.binary)
        return PairedComparison(metric, b_iv, t_iv, shift.diff, shift.p_value, shift.p_value < alpha, shift.test, n,
                                shift.smallest_p)
    if n < min_count:
        p = _randomisation_p(metric, baseline, tuned, refs, resamples, rng)
        diff = Interval(diff_value, None, None, level, "none")
        return PairedComparison(metric, b_iv, t_iv, diff, p, p < alpha, "approximate randomization", n,
                                1 / (resamples + 1))
    idx = rng.integers(0, n, size=(resamples, n))
    deltas = np.sort(_scores(metric, tuned, refs, idx) - _scores(metric, baseline, refs, idx))
    # Order statistics and a p-value from the same resamples: the interval excludes 0 exactly when p < alpha.
    k = max(math.ceil(alpha * resamples / 2) - 1, 0)
    below, above = int(np.sum(deltas <= 0)), int(np.sum(deltas >= 0))
    p = min(1.0, max(2 * min(below, above), 1) / resamples)
    diff = Interval(diff_value, float(deltas[k]), float(deltas[resamples - 1 - k]), level, "bootstrap")
    return PairedComparison(metric, b_iv, t_iv, diff, p, p < alpha, "paired bootstrap", n, 1 / resamples)


def _randomisation_p(metric: str, a: Sequence[str], b: Sequence[str], refs: Sequence[Reference], resamples: int,
                     rng: np.random.Generator) -> float:
    """Approximate randomisation: swap the two systems' outputs per example at random."""
    m = METRICS[metric]
    swaps = rng.random((resamples, len(refs))) < 0.5
    if m.stats is not None and m.from_stats is not None:
        sa, sb = m.stats(a, refs), m.stats(b, refs)
        observed = abs(m.from_stats(sb.sum(axis=0)) - m.from_stats(sa.sum(axis=0)))
        delta = swaps.astype(float) @ (sb - sa)  # what swapping moves from one system's totals to the other's
        x, y = sa.sum(axis=0) + delta, sb.sum(axis=0) - delta
        stats = np.array([abs(m.from_stats(yi) - m.from_stats(xi)) for xi, yi in zip(x, y)])
    else:
        observed = abs(m.fn(b, refs) - m.fn(a, refs))
        rows = []
        for row in swaps:
            x = [bi if s else ai for ai, bi, s in zip(a, b, row)]
            y = [ai if s else bi for ai, bi, s in zip(a, b, row)]
            rows.append(abs(m.fn(y, refs) - m.fn(x, refs)))
        stats = np.asarray(rows)
    return float((np.sum(stats >= observed - 1e-12) + 1) / (resamples + 1))
