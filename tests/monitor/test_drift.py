"""Drift statistics against reference implementations, their false-alarm rate without drift, and the label-free estimate."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

import tunesmith
from tunesmith.config import DedupConfig
from tunesmith.data.examples import Example
from tunesmith.monitor.drift import (domain_classifier, has_pii, label_shift, length_drift, near_duplicate_share,
                                     proportion, psi)
from tunesmith.monitor.estimate import Calibration, estimate_accuracy

#: banking77 messages shipped with tunesmith (8 intents x 100; PolyAI, CC BY 4.0, see the file's NOTICE.md).
BANKING77 = Path(tunesmith.__file__).parent / "templates" / "classification" / "train.jsonl"


@pytest.fixture(scope="module")
def banking() -> dict[str, list[str]]:
    """banking77 messages by intent."""
    out: dict[str, list[str]] = {}
    for line in BANKING77.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        out.setdefault(row["label"], []).append(row["text"])
    return out


def test_psi_on_fixed_data_by_hand():
    # Ten reference values, one per decile bin (p = 0.1 each after half a count per bin); all ten live
    # values in the last bin: q = 10.5 / 15 there and 0.5 / 15 elsewhere.
    ref, live = list(range(1, 11)), [10] * 10
    p, q_last, q_other = 0.1, 10.5 / 15, 0.5 / 15
    by_hand = 9 * (q_other - p) * np.log(q_other / p) + (q_last - p) * np.log(q_last / p)
    assert psi(ref, live) == pytest.approx(by_hand) == pytest.approx(1.8267, abs=1e-4)
    assert psi(ref, ref) == pytest.approx(0.0)
    assert psi(ref, [0] * 10) == pytest.approx(by_hand)  # below the range counts in the first bin


def test_length_drift_is_scipys_ks_test():
    rng = np.random.default_rng(0)
    a, b = rng.poisson(8, 400), rng.poisson(11, 150)
    test = length_drift(a, b)
    ref = stats.ks_2samp(a, b)
    assert (test.statistic, test.p_value) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue))
    assert test.effect == pytest.approx(psi(a, b))


def test_label_shift_is_scipys_chi_squared_test_of_homogeneity():
    train = ["a"] * 60 + ["b"] * 30 + ["c"] * 10
    live = ["a"] * 10 + ["b"] * 10 + ["c"] * 20 + ["d"] * 5  # d: a label the training data never had
    test = label_shift(train, live, ["a", "b", "c"])
    table = np.array([[60, 30, 10, 0], [10, 10, 20, 5]])
    ref = stats.chi2_contingency(table, correction=False)
    assert (test.statistic, test.p_value) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue))
    expected_by_hand = np.outer(table.sum(1), table.sum(0)) / table.sum()
    assert test.statistic == pytest.approx(((table - expected_by_hand) ** 2 / expected_by_hand).sum())
    shares = table / table.sum(1, keepdims=True)
    assert test.effect == pytest.approx(0.5 * np.abs(shares[0] - shares[1]).sum())
    assert test.detail["most_changed"][0]["label"] == "a"


def test_domain_classifier_auc_is_sklearns_and_it_sees_new_intents(banking):
    intents = sorted(banking)
    known = [t for i in intents[:4] for t in banking[i]]
    rng = random.Random(0)
    reference = rng.sample(known, 300)
    drifted = rng.sample([t for i in intents[4:] for t in banking[i]], 150)
    test = domain_classifier(reference, drifted, seed=0)
    assert test.statistic > 0.8 and test.p_value < 1e-6
    scores = np.asarray(test.detail["live_scores"])
    assert scores.shape == (150,) and ((0 <= scores) & (scores <= 1)).all()
    # The statistic is the held-out ROC-AUC as scikit-learn computes it; here on a known case.
    y, s = np.array([0, 0, 1, 1, 0, 1]), np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    u = stats.mannwhitneyu(s[y == 1], s[y == 0]).statistic
    assert u / (3 * 3) == pytest.approx(roc_auc_score(y, s))


def test_no_drift_alerts_at_most_at_the_false_alarm_rate_and_drift_always_does(banking):
    """Across 30 seeds: samples of the same intents rarely reject at alpha = 0.01; new intents always do."""
    alpha = 0.01
    intents = sorted(banking)
    known = [(t, i) for i in intents[:4] for t in banking[i]]
    new = [(t, i) for i in intents[4:] for t in banking[i]]
    false_alarms = detected = 0
    for seed in range(30):
        rng = random.Random(seed)
        pool = rng.sample(known, 360)
        train, same = pool[:270], pool[270:]
        drifted = rng.sample(new, 68) + rng.sample(known, 22)  # three quarters of the traffic: intents never trained
        for live, drift in ((same, False), (drifted, True)):
            texts = [t for t, _ in live]
            tests = [length_drift([len(t.split()) for t, _ in train], [len(t.split()) for t in texts]),
                     domain_classifier([t for t, _ in train], texts, seed=seed),
                     label_shift([i for _, i in train], [i for _, i in live], intents[:4])]
            rejected = sum(t.p_value < alpha for t in tests)
            if drift:
                detected += tests[1].p_value < alpha and tests[2].p_value < alpha
            else:
                false_alarms += rejected
    # 90 tests at alpha 0.01: 0.9 false alarms expected; 5 or more has probability 0.002.
    assert false_alarms <= 4
    assert detected == 30


def test_near_duplicates_and_pii():
    train = [Example(id=str(i), prompt=t, target="x") for i, t in enumerate(
        ["where is my new card, it has not arrived", "how do I unblock my pin code please"])]
    share, flags = near_duplicate_share(train, ["where is my new card, it has not arrived!", "what rate for euros"],
                                        DedupConfig())
    assert flags == [True, False] and share == 0.5
    assert has_pii("mail me at <EMAIL>") and has_pii("mail me at ann@example.com") and not has_pii("hello")


def test_proportion_interval_is_clopper_pearson():
    share, low, high = proportion(3, 40)
    ci = stats.binomtest(3, 40).proportion_ci(method="exact")
    assert (share, low, high) == (0.075, pytest.approx(ci.low), pytest.approx(ci.high))


def test_label_free_estimate_tracks_true_accuracy_on_shifted_confidence():
    """Calibrated on one set, the estimate on a set with another confidence mix matches its true accuracy."""
    covered = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        p_cal = rng.uniform(0.2, 1.0, 600)
        correct = rng.random(600) < p_cal ** 2  # over-confident model: right with probability p squared
        live = rng.beta(1, 4, 300) * 0.8 + 0.2  # live traffic: far less confident on average
        truth = float((rng.random(300) < live ** 2).mean())
        est = estimate_accuracy(Calibration(p_cal, correct.astype(float)), live, seed=seed)
        assert est.reference == pytest.approx(correct.mean())
        assert abs(est.value - truth) < 0.08
        covered += est.low <= truth <= est.high
        assert est.value < est.reference - 0.1  # the drop shows before any label
    assert covered >= 17  # 95% intervals: at least 17 of 20
