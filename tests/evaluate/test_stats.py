"""Intervals and paired tests: golden cases, parity with scipy's exact tests, and interval and test never
contradicting each other at any test size."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from tunesmith.evaluate.stats import compare_paired, metric_interval


def test_interval_agrees_with_scipy_percentile_bootstrap():
    rng = np.random.default_rng(3)
    refs = ["a"] * 400
    preds = ["a" if x else "b" for x in rng.random(400) < 0.7]
    ours = metric_interval("accuracy", preds, refs, resamples=4000, seed=1)
    correct = np.array([p == "a" for p in preds], float)
    ref = scipy_stats.bootstrap((correct,), np.mean, n_resamples=4000, method="percentile", random_state=1)
    assert ours.method == "bootstrap" and ours.value == pytest.approx(correct.mean())
    assert ours.low == pytest.approx(ref.confidence_interval.low, abs=0.01)
    assert ours.high == pytest.approx(ref.confidence_interval.high, abs=0.01)


def test_a_small_test_set_gets_an_exact_interval_for_a_proportion_and_none_otherwise():
    preds, refs = ["a", "a", "b", "a", "a"], ["a"] * 5
    iv = metric_interval("accuracy", preds, refs)
    ci = scipy_stats.binomtest(4, 5).proportion_ci(confidence_level=0.95, method="exact")
    assert iv.method == "exact" and (iv.low, iv.high) == pytest.approx((ci.low, ci.high))
    f1 = metric_interval("token_f1", ["a b c", "d"], ["a b", "d e"])
    assert f1.method == "none" and not f1.known and f1.span() == "none (too few examples)"
    assert metric_interval("accuracy", preds, refs, min_count=3).method == "bootstrap"


def test_paired_accuracy_uses_the_exact_mcnemar_test():
    refs = ["x"] * 40
    # 9 examples only the tuned model gets right, 2 only the baseline: McNemar's exact test on 11 discordant pairs
    base = ["x"] * 20 + ["y"] * 9 + ["x"] * 2 + ["y"] * 9
    tuned = ["x"] * 20 + ["x"] * 9 + ["y"] * 2 + ["y"] * 9
    cmp = compare_paired("accuracy", base, tuned, refs)
    assert cmp.test == "exact McNemar"
    assert cmp.p_value == pytest.approx(scipy_stats.binomtest(9, 11, 0.5).pvalue)
    assert cmp.diff.value == pytest.approx(7 / 40)


def test_small_paired_token_f1_uses_the_exact_permutation_test():
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta"]
    refs = [" ".join(rng.choice(words, 3)) for _ in range(10)]
    base = [" ".join(rng.choice(words, 2)) for _ in range(10)]
    tuned = [r if i % 3 else " ".join(rng.choice(words, 2)) for i, r in enumerate(refs)]
    cmp = compare_paired("token_f1", base, tuned, refs)
    from tunesmith.evaluate.metrics import METRICS
    d = np.array(METRICS["token_f1"].per_example(tuned, refs)) - np.array(METRICS["token_f1"].per_example(base, refs))
    ref = scipy_stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf,
                                       alternative="two-sided")
    assert cmp.test == "exact permutation" and cmp.p_value == pytest.approx(ref.pvalue)


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
    # one discordant example: not significant, and the interval of the change says the same by containing 0
    assert not tiny.significant and tiny.diff.low <= 0 < tiny.diff.high and tiny.p_value == 1.0


def test_two_examples_can_never_be_significant_and_the_report_knows():
    cmp = compare_paired("accuracy", ["y", "y"], ["x", "x"], ["x", "x"])
    assert cmp.smallest_p == 0.5 and cmp.p_value == 0.5 and not cmp.significant
    assert cmp.diff.low <= 0 <= cmp.diff.high


@pytest.mark.parametrize("metric", ["accuracy", "token_f1", "macro_f1", "chrf"])
@pytest.mark.parametrize("n", [2, 5, 12, 25, 40, 120])
def test_interval_and_test_never_contradict(metric, n):
    rng = np.random.default_rng(n)
    labels = ["red", "green", "blue", "red green"]
    for trial in range(4):
        refs = list(rng.choice(labels, n))
        gain = [0.2, 0.45, 0.6, 0.8][trial]
        base = [r if rng.random() < 0.4 else str(rng.choice(labels)) for r in refs]
        tuned = [r if rng.random() < gain else str(rng.choice(labels)) for r in refs]
        cmp = compare_paired(metric, base, tuned, refs, resamples=400, seed=trial)
        assert cmp.significant == (cmp.p_value < 0.05)
        if cmp.diff.known:
            assert cmp.diff.excludes(0) == cmp.significant, cmp
            assert cmp.diff.low <= cmp.diff.value <= cmp.diff.high
        else:
            assert n < 30 and cmp.diff.method == "none"


def test_corpus_metrics_are_recomputed_per_resample():
    refs = ["a", "b", "c", "a", "b", "c"] * 5
    base = ["a", "a", "a", "a", "a", "a"] * 5
    tuned = refs
    cmp = compare_paired("macro_f1", base, tuned, refs, resamples=300, seed=2)
    assert cmp.tuned.value == 1.0 and cmp.tuned.low == 1.0 and cmp.significant and cmp.test == "paired bootstrap"
    assert cmp.baseline.low <= cmp.baseline.value <= cmp.baseline.high
    again = compare_paired("macro_f1", base, tuned, refs, resamples=300, seed=2)
    assert again == cmp  # seeded: the same inputs give the same intervals
