"""Drift statistics: live traffic against the training data, each a test with an effect size.

Every test here is from a well-kept library (scipy's two-sample KS and chi-squared,
scikit-learn's cross-validated classifier and ROC-AUC); what is written here is the effect
sizes around them (the population stability index, total variation distance) and how a
signal pairs the two, so that a log of a million requests does not alert on a shift too small
to matter and a log of thirty does not alert on noise.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import get_args

import numpy as np
from scipy import stats

from tunesmith.config import DedupConfig, PiiType
from tunesmith.data.examples import Example
from tunesmith.data.pii import find_pii
from tunesmith.data.quality import find_leakage

#: The request log's scrubber leaves these placeholders where personal data was (``<EMAIL>``...).
PLACEHOLDER = re.compile(r"<(" + "|".join(get_args(PiiType)) + r")>")
#: Answers that refuse rather than answer.
REFUSAL = re.compile(r"^\s*(i'?m sorry|i am sorry|i can(?:'|no)t|i cannot|i am unable|i'm unable|as an ai)\b", re.I)


def word_count(text: str) -> int:
    """Whitespace-separated words: a length both the log and the training data have without a tokenizer."""
    return len(text.split())


def psi(reference: Sequence[float], live: Sequence[float], bins: int = 10) -> float:
    """Population stability index of ``live`` against ``reference``.

    Bins are the reference's deciles (ties merged), open at both ends so that live values beyond
    the reference's range count; empty bins get half a count so the logarithm stays finite.
    """
    ref, cur = np.asarray(reference, float), np.asarray(live, float)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    ref_counts = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1) + 0.5
    cur_counts = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1) + 0.5
    p, q = ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum()
    return float(np.sum((q - p) * np.log(q / p)))


@dataclass(frozen=True)
class Test:
    """A drift test's outcome.

    Attributes:
        statistic: The test statistic (KS D, chi-squared, ROC-AUC).
        p_value: Its p-value.
        effect: The effect size the threshold applies to (PSI, total variation, ROC-AUC).
        detail: Anything a report shows beside it.
    """

    statistic: float
    p_value: float
    effect: float
    detail: dict = field(default_factory=dict)


def length_drift(reference: Sequence[float], live: Sequence[float]) -> Test:
    """Two-sample KS test (scipy) of the lengths, with the PSI as effect size."""
    result = stats.ks_2samp(reference, live)
    return Test(float(result.statistic), float(result.pvalue), psi(reference, live),
                {"reference_median": float(np.median(reference)), "live_median": float(np.median(live))})


def label_shift(reference: Sequence[str], live: Sequence[str], labels: Sequence[str]) -> Test:
    """Chi-squared test of homogeneity (scipy's ``chi2_contingency``) of the live labels and the training labels.

    A two-sample test: the training shares are themselves a sample, and a goodness-of-fit test that
    took them as exact rejected 6 of 30 samples of one distribution at 0.01 (banking77, 380 training
    and 120 live rows). A label only one side has is a column like any other. The effect size is the
    total variation distance between the two distributions (half the summed absolute differences).
    """
    ref, cur = Counter(reference), Counter(live)
    names = [n for n in dict.fromkeys([*labels, *sorted(cur)]) if ref.get(n) or cur.get(n)]
    table = np.array([[ref.get(n, 0) for n in names], [cur.get(n, 0) for n in names]], float)
    result = stats.chi2_contingency(table, correction=False)
    p, q = table[0] / max(table[0].sum(), 1), table[1] / max(table[1].sum(), 1)
    tvd = float(0.5 * np.abs(p - q).sum())
    moved = sorted(range(len(names)), key=lambda i: -abs(q[i] - p[i]))[:5]
    return Test(float(result.statistic), float(result.pvalue), tvd,
                {"live_share": {n: round(float(x), 4) for n, x in zip(names, q) if x > 0},
                 "most_changed": [{"label": names[i], "training": round(float(p[i]), 4), "live": round(float(q[i]), 4)}
                                  for i in moved]})


def domain_classifier(reference: Sequence[str], live: Sequence[str], *, seed: int = 0) -> Test:
    """Classifier two-sample test: can a model tell live inputs from training inputs?

    TF-IDF of word uni- and bigrams and character 3-5-grams (fitted without the labels) and a logistic
    regression (scikit-learn), trained on one half of both samples (stratified, seeded) and scored on
    the other: the statistic is the held-out ROC-AUC (0.5: the two cannot be told apart), and since the
    model never saw the held-out half, its p-value is the Mann-Whitney U test's of the held-out scores
    (scipy; AUC = U / (n1 n0)), exact under no drift. Two variants measured on banking77 inputs of
    one distribution were not: five-fold scores pooled with labels permuted within folds gave p < 0.05
    in 15% of 40 seeds (each fold's model carries the other folds' labels into the pooled scores), and
    refitting per permutation (scikit-learn's ``permutation_test_score``) took 88 s for 100
    permutations of 2,300 inputs. A second model with the halves swapped scores the other half, so
    every live input gets a held-out score for the report's examples.

    Returns:
        The test; ``detail["live_scores"]`` holds each live input's held-out probability of being live.
    """
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    texts = [*reference, *live]
    y = np.r_[np.zeros(len(reference), int), np.ones(len(live), int)]
    words = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), min_df=2, sublinear_tf=True, max_features=20000)
    x = hstack([words.fit_transform(texts), chars.fit_transform(texts)]).tocsr()
    first, second = train_test_split(np.arange(len(y)), test_size=0.5, stratify=y, random_state=seed)
    scores = np.zeros(len(y))
    for fit, held in ((first, second), (second, first)):
        model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000).fit(x[fit], y[fit])
        scores[held] = model.predict_proba(x[held])[:, 1]
    held_y, held_scores = y[second], scores[second]
    auc = float(roc_auc_score(held_y, held_scores))
    test = stats.mannwhitneyu(held_scores[held_y == 1], held_scores[held_y == 0], alternative="greater")
    return Test(auc, float(test.pvalue), auc, {"held_out": {"live": int(held_y.sum()), "training": int(len(held_y) - held_y.sum())},
                                               "live_scores": scores[len(reference):].tolist()})


def near_duplicate_share(training: Sequence[Example], live: Sequence[str], dedup: DedupConfig) -> tuple[float, list[bool]]:
    """Share of live inputs that nearly duplicate a training input, by the data step's own MinHash leakage check."""
    if not live:
        return 0.0, []
    probes = [Example(id=f"live:{i}", prompt=t, target="") for i, t in enumerate(live)]
    kept, _ = find_leakage(training, {"live": probes}, dedup)["live"]
    clean = {ex.id for ex in kept}
    flags = [ex.id not in clean for ex in probes]
    return sum(flags) / len(flags), flags


def has_pii(text: str) -> bool:
    """Whether a logged text held personal data: a scrubber placeholder, or a finding where the log was not scrubbed."""
    return bool(PLACEHOLDER.search(text)) or bool(find_pii(text))


def proportion(k: int, n: int, level: float = 0.95) -> tuple[float, float, float]:
    """A share with its exact (Clopper-Pearson) interval from scipy; (0, 0, 1) when ``n`` is 0."""
    if n == 0:
        return 0.0, 0.0, 1.0
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
    return k / n, float(ci.low), float(ci.high)
