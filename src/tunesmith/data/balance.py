"""Class balance of the training split: measure it, warn about thin classes, and resample or weight."""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tunesmith.config import BalanceConfig
from tunesmith.data.examples import Example


@dataclass
class Balanced:
    """The training split after the balance strategy.

    Attributes:
        train: The training examples (with copies, under oversampling).
        dropped: Examples left out by undersampling.
        copies: How many copies oversampling added.
        class_weights: Loss weight per label (``loss_weights``), else None.
        report: Label counts before and after, the imbalance ratio and the strategy.
        warnings: Classes with too few examples to learn or to measure.
    """

    train: list[Example]
    dropped: list[Example]
    copies: int
    class_weights: dict[str, float] | None
    report: dict[str, Any]
    warnings: list[str]


def imbalance_ratio(counts: dict[str, int]) -> float | None:
    """Largest class count over smallest (1.0 is balanced); None without classes."""
    return round(max(counts.values()) / min(counts.values()), 2) if counts else None


#: Two label names at least this alike (difflib's ratio, after case and punctuation are dropped) are reported.
SIMILAR_LABELS = 0.85


def similar_labels(counts: dict[str, int]) -> list[str]:
    """Warnings for label names that look like one label spelt two ways (``Shipping``/``shiping``), with their counts.

    Names that differ only in digits (``level_1``/``level_2``) are taken to be meant apart.
    """
    def norm(name: str) -> str:
        return re.sub(r"[^a-z0-9]", "", name.lower())

    out = []
    for a, b in itertools.combinations(sorted(counts), 2):
        na, nb = norm(a), norm(b)
        if re.sub(r"\d", "", na) == re.sub(r"\d", "", nb) and na != nb:
            continue
        if na == nb or difflib.SequenceMatcher(None, na, nb).ratio() >= SIMILAR_LABELS:
            out.append(f"labels {a!r} ({counts[a]} training and test examples) and {b!r} ({counts[b]}) look like one "
                       "label spelt two ways: correct the data, or keep both if they are meant apart")
    return out


def balance_train(train: Sequence[Example], test: Sequence[Example], labels: Sequence[str], cfg: BalanceConfig,
                  seed: int) -> Balanced:
    """Apply the balance strategy to the training split and report the label distribution.

    Args:
        train: Training examples (labelled).
        test: Test examples, only counted (never resampled).
        labels: The label set.
        cfg: Strategy and minimum counts.
        seed: Seed for the resampling.

    Returns:
        The balanced training split and what was done.
    """
    counts = {lab: 0 for lab in labels} | dict(Counter(ex.label for ex in train))
    test_counts = {lab: 0 for lab in labels} | dict(Counter(ex.label for ex in test))
    warnings = [f"class {lab!r} has {n} training examples (fewer than data.balance.min_per_class={cfg.min_per_class}): "
                "too few to learn it reliably" for lab, n in counts.items() if n < cfg.min_per_class]
    warnings += [f"class {lab!r} has {n} test examples (fewer than data.balance.min_test_per_class="
                 f"{cfg.min_test_per_class}): its results are too noisy to read" for lab, n in test_counts.items()
                 if n < cfg.min_test_per_class]
    warnings += similar_labels({lab: counts.get(lab, 0) + test_counts.get(lab, 0) for lab in labels})
    present = {lab: n for lab, n in counts.items() if n > 0}
    rng = random.Random(seed)
    out, dropped, copies, weights = list(train), [], 0, None
    by_label: dict[str, list[Example]] = {lab: [] for lab in present}
    for ex in train:
        by_label[ex.label].append(ex)  # type: ignore[index]
    if cfg.strategy == "oversample" and present:
        top = max(present.values())
        for lab, group in by_label.items():
            extra = rng.choices(group, k=top - len(group))
            out += [dataclasses.replace(ex, id=f"{ex.id}#copy{k + 1}") for k, ex in enumerate(extra)]
            copies += len(extra)
        rng.shuffle(out)
    elif cfg.strategy == "undersample" and present:
        low = min(present.values())
        keep = {ex.id for group in by_label.values() for ex in rng.sample(group, low)}
        dropped = [ex for ex in train if ex.id not in keep]
        out = [ex for ex in train if ex.id in keep]
    elif cfg.strategy == "loss_weights" and present:
        # Inverse frequency, scaled so that the average weight over training examples is 1.
        total, k = sum(present.values()), len(present)
        weights = {lab: round(total / (k * n), 6) for lab, n in present.items()}
    after = dict(Counter(ex.label for ex in out))
    report = {"strategy": cfg.strategy, "train_counts": counts, "test_counts": test_counts,
              "imbalance_ratio": imbalance_ratio(present), "train_counts_after": after,
              "imbalance_ratio_after": imbalance_ratio(after)}
    return Balanced(out, dropped, copies, weights, report, warnings)
