"""Turning encoded examples into padded batches."""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from tunesmith.data.encode import IGNORE_INDEX, Encoded


def collate(items: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch for training; padding carries no label and no attention.

    A ``weights`` tensor (one per example) is added only when some example's weight is not 1.
    """
    width = max(len(e.input_ids) for e in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for i, e in enumerate(items):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if any(e.weight != 1.0 for e in items):
        batch["weights"] = torch.tensor([e.weight for e in items], dtype=torch.float32)
    return batch


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int, group: int = 64) -> list[list[int]]:
    """Shuffle, then sort by length within groups of ``group`` batches, then shuffle the batches.

    Examples of similar length share a batch, so little compute is spent on padding,
    while the order stays random from epoch to epoch.

    Args:
        lengths: Token count of each example.
        batch_size: Examples per batch.
        seed: Seed for this epoch's order.
        group: How many batches' worth of examples are sorted together.

    Returns:
        Lists of example indices, one per batch.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    span = batch_size * group
    batches: list[list[int]] = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: lengths[i])
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def sequential_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Batches for evaluation: sorted by length (least padding), deterministic."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[j : j + batch_size] for j in range(0, len(order), batch_size)]
