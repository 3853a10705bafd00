"""Deterministic, seeded, optionally stratified splits."""

from __future__ import annotations

import random
from collections import defaultdict

from tunesmith.data.examples import Example


def split_examples(
    examples: list[Example], fractions: tuple[float, float, float], seed: int, stratify: bool,
    by_passage: bool = False,
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
        by_passage: Keep examples with the same ``context`` (a QA passage) in one split.

    Returns:
        The three splits, each in a seeded shuffled order.
    """
    if by_passage and any(ex.context for ex in examples):
        return _split_by_passage(examples, fractions, seed)
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


def _split_by_passage(examples: list[Example], fractions: tuple[float, float, float],
                      seed: int) -> tuple[list[Example], list[Example], list[Example]]:
    """Whole passages to test, then validation, then train, in a seeded order, until each has its share."""
    passages: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        passages[" ".join((ex.context or f"\x00{ex.id}").split())].append(ex)
    keys = sorted(passages)
    random.Random(f"{seed}:passages").shuffle(keys)
    n = len(examples)
    want_test, want_val = round(n * fractions[2]), round(n * fractions[1])
    train: list[Example] = []
    val: list[Example] = []
    test: list[Example] = []
    for i, key in enumerate(keys):
        group = passages[key]
        if len(test) < want_test and i < len(keys) - 1:
            test += group
        elif len(val) < want_val and i < len(keys) - 1:
            val += group
        else:
            train += group
    for i, part in enumerate((train, val, test)):
        random.Random(f"{seed}:order:{i}").shuffle(part)
    return train, val, test
