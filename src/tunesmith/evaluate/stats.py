"""Honesty about noise: bootstrap confidence intervals and a paired significance test.

Both resample the test examples, so they answer "would this hold on another test set drawn
the same way?". Metrics that are means of per-example scores are resampled as arrays; corpus
metrics with sufficient statistics (P/R/F1 from confusion counts, BLEU and chrF from
sacrebleu's n-gram statistics, as ``sacrebleu.significance`` does) are scored from summed
statistics; any other metric is recomputed on every resample.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tunesmith.evaluate.intervals import Interval, PairedComparison
from tunesmith.evaluate.metrics import METRICS, Reference


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


def _interval(value: float, samples: np.ndarray, level: float) -> Interval:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return Interval(float(value), float(low), float(high), level)


def bootstrap_interval(metric: str, preds: Sequence[str], refs: Sequence[Reference], *, resamples: int = 1000,
                       seed: int = 0, level: float = 0.95) -> Interval:
    """Percentile bootstrap interval of one model's metric.

    Args:
        metric: A registered metric.
        preds: Predictions.
        refs: References.
        resamples: Bootstrap resamples.
        seed: Seed of the resampling.
        level: Confidence level.

    Returns:
        The metric and its interval.
    """
    n = len(preds)
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    return _interval(METRICS[metric].fn(preds, refs), _scores(metric, preds, refs, idx), level)


def compare_paired(metric: str, baseline: Sequence[str], tuned: Sequence[str], refs: Sequence[Reference], *,
                   resamples: int = 1000, seed: int = 0, level: float = 0.95) -> PairedComparison:
    """Paired bootstrap intervals and a paired permutation test of tuned versus baseline.

    The same resampled example sets score both models, so the interval of the difference
    reflects how much the comparison, not each model alone, depends on the test set.

    Args:
        metric: A registered metric.
        baseline: Baseline predictions.
        tuned: Tuned predictions, for the same examples in the same order.
        refs: References.
        resamples: Resamples for the bootstrap and for the permutation test.
        seed: Seed of both.
        level: Confidence level.

    Returns:
        Both models' intervals, the difference's, and the p-value.

    Raises:
        ValueError: The prediction lists differ in length from the references.
    """
    n = len(refs)
    if len(baseline) != n or len(tuned) != n:
        raise ValueError("baseline, tuned and references must have the same length")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    fn = METRICS[metric].fn
    b_val, t_val = fn(baseline, refs), fn(tuned, refs)
    b_s, t_s = _scores(metric, baseline, refs, idx), _scores(metric, tuned, refs, idx)
    diff = _interval(t_val - b_val, t_s - b_s, level)
    p = _permutation_p(metric, baseline, tuned, refs, resamples, rng)
    significant = p < 1 - level and (diff.low > 0 or diff.high < 0)
    return PairedComparison(metric, _interval(b_val, b_s, level), _interval(t_val, t_s, level), diff, p, significant)


def _permutation_p(metric: str, a: Sequence[str], b: Sequence[str], refs: Sequence[Reference], resamples: int,
                   rng: np.random.Generator) -> float:
    """Approximate randomisation: swap the two systems' outputs per example at random."""
    m = METRICS[metric]
    swaps = rng.random((resamples, len(refs))) < 0.5
    if m.per_example is not None:
        pa, pb = np.asarray(m.per_example(a, refs), float), np.asarray(m.per_example(b, refs), float)
        observed = abs(pb.mean() - pa.mean())
        d = pb - pa
        stats = np.abs(np.where(swaps, -d, d).mean(axis=1))
    elif m.stats is not None and m.from_stats is not None:
        sa, sb = m.stats(a, refs), m.stats(b, refs)
        observed = abs(m.from_stats(sb.sum(axis=0)) - m.from_stats(sa.sum(axis=0)))
        delta = swaps.astype(float) @ (sb - sa)  # what swapping moves from one system's totals to the other's
        x, y = sa.sum(axis=0) + delta, sb.sum(axis=0) - delta
        stats = np.array([abs(m.from_stats(yi) - m.from_stats(xi)) for xi, yi in zip(x, y)])
    else:
        observed = abs(m.fn(b, refs) - m.fn(a, refs))
        stats = []
        for row in swaps:
            x = [bi if s else ai for ai, bi, s in zip(a, b, row)]
            y = [ai if s else bi for ai, bi, s in zip(a, b, row)]
            stats.append(abs(m.fn(y, refs) - m.fn(x, refs)))
        stats = np.asarray(stats)
    return float((np.sum(stats >= observed - 1e-12) + 1) / (resamples + 1))
