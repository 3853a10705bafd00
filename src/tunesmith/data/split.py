"""Deterministic, seeded, optionally stratified splits."""

from __future__ import annotations

import random
from collections import defaultdict

from tunesmith.data.examples import Example


def split_examples(
    examples: list[Example], fractions: tuple[float, float, float], seed: int, stratify: bool
) -> tuple[list[Example], list[Example], list[Example]]:
    """Split examples into train, validation and test.

    Each stratum (label, when ``stratify``) is shuffled with its own seeded generator and cut
    by the fractions, so every label keeps its share in every split and the result depends
    only on the examples and the seed. Written by hand rather than with scikit-learn because
    ``train_test_split`` refuses classes with fewer than two members, which small user data has.

    Args:
        examples: All examples, in file order.
        fractions: (train, validation, test), summing to 1.
        seed: Random seed.
        stratify: Keep label proportions in each split.

    Returns:
        The three splits, each in a seeded shuffled order.
    """
    _, f_val, f_test = fractions
    groups: dict[str | None, list[Example]] = defaultdict(list)
    for ex in examples:
        groups[ex.label if stratify else None].append(ex)
    train: list[Example] = []
    val: list[Example] = []
    test: list[Example] = []
    for key in sorted(groups, key=lambda k: "" if k is None else k):
        items = list(groups[key])
        random.Random(f"{seed}:{key}").shuffle(items)
        n = len(items)
        n_test = round(n * f_test)
        n_val = round(n * f_val)
        if n_test + n_val >= n:  # always leave something to learn from
            n_test, n_val = min(n_test, max(n - 1, 0)), max(0, min(n_val, n - 1 - n_test))
        test += items[:n_test]
        val += items[n_test : n_test + n_val]
        train += items[n_test + n_val :]
    for i, part in enumerate((train, val, test)):
        random.Random(f"{seed}:order:{i}").shuffle(part)
    return train, val, test
