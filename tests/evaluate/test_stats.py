"""Bootstrap intervals and the paired significance test: golden cases and agreement with scipy."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from tunesmith.evaluate.stats import bootstrap_interval, compare_paired


def test_interval_agrees_with_scipy_percentile_bootstrap():
    rng = np.random.default_rng(3)
    refs = ["a"] * 400
    preds = ["a" if x else "b" for x in rng.random(400) < 0.7]
    ours = bootstrap_interval("accuracy", preds, refs, resamples=4000, seed=1)
    correct = np.array([p == "a" for p in preds], float)
    ref = scipy_stats.bootstrap((correct,), np.mean, n_resamples=4000, method="percentile", random_state=1)
    assert ours.value == pytest.approx(correct.mean())
    assert ours.low == pytest.approx(ref.confidence_interval.low, abs=0.01)
    assert ours.high == pytest.approx(ref.confidence_interval.high, abs=0.01)


def test_identical_systems_are_not_significantly_different():
    preds, refs = ["a", "b", "a", "c"] * 10, ["a", "b", "b", "c"] * 10
    cmp = compare_paired("accuracy", preds, preds, refs, resamples=500)
    assert cmp.diff.value == 0 and cmp.diff.low == 0 and cmp.diff.high == 0
    assert cmp.p_value == 1.0 and not cmp.significant


def test_a_clear_improvement_is_significant_and_a_tiny_one_is_not():
    refs = ["x"] * 60
    base, tuned = ["y"] * 60, ["x"] * 54 + ["y"] * 6
    cmp = compare_paired("accuracy", base, tuned, refs, resamples=999, seed=0)
    assert cmp.diff.value == pytest.approx(0.9) and cmp.diff.low > 0.8 and cmp.significant and cmp.p_value < 0.01
    tiny = compare_paired("accuracy", ["x"] * 30 + ["y"] * 30, ["x"] * 31 + ["y"] * 29, refs, resamples=999, seed=0)
    # one discordant example: every resample shows a gain of 0 or more, yet nothing is significant
    assert not tiny.significant and tiny.diff.low == 0 < tiny.diff.high and tiny.p_value == 1.0


def test_corpus_metrics_are_recomputed_per_resample():
    refs = ["a", "b", "c", "a", "b", "c"] * 5
    base = ["a", "a", "a", "a", "a", "a"] * 5
    tuned = refs
    cmp = compare_paired("macro_f1", base, tuned, refs, resamples=300, seed=2)
    assert cmp.tuned.value == 1.0 and cmp.tuned.low == 1.0 and cmp.significant
    assert cmp.baseline.low <= cmp.baseline.value <= cmp.baseline.high
    again = compare_paired("macro_f1", base, tuned, refs, resamples=300, seed=2)
    assert again == cmp  # seeded: the same inputs give the same intervals
