"""Turning encoded examples into padded batches."""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from tunesmith.data.encode import IGNORE_INDEX, Encoded


def padded_length(length: int, multiple: int) -> int:
    """``length`` rounded up to a multiple of ``multiple``."""
    return -(-length // multiple) * multiple


def collate(items: Sequence[Encoded], pad_id: int, multiple: int = 1) -> dict[str, torch.Tensor]:
    """Right-pad a batch for training; padding carries no label and no attention.

    A ``weights`` tensor (one per example) is added only when some example's weight is not 1.
    ``multiple`` rounds the width up (see :func:`collate_packed` for why).
    """
    width = padded_length(max(len(e.input_ids) for e in items), multiple)
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


def collate_packed(items: Sequence[Encoded], pad_id: int = 0, multiple: int = 1) -> dict[str, torch.Tensor]:
    """Concatenate a batch into one row; each example keeps its own positions.

    ``position_ids`` restart at 0 for every example and ``lengths`` says where each one ends, so
    attention can be kept inside each example (:func:`tunesmith.models.fast_attention.packed`).
    The first token of every example gets no label: in the row it would be predicted from the
    previous example's last token, which an unpacked batch never does. A ``weights`` tensor (one
    per token) is added only when some example's weight is not 1.

    With ``multiple`` above 1 the row is rounded up to a multiple of it by one more segment of
    ``pad_id`` tokens with no labels, attended apart like an example. Why: oneDNN, which runs
    PyTorch's bf16 products on the CPU, compiles and keeps code for every new matrix shape, about
    0.6 MB each, and never frees it; a row length new at every step grew the embedded model's
    process by 16 MB per step (measured), while a few rounded lengths stop the growth after the
    first steps.
    """
    sizes = [len(e.input_ids) for e in items]
    extra = padded_length(sum(sizes), multiple) - sum(sizes)
    ids = torch.tensor([t for e in items for t in e.input_ids] + [pad_id] * extra, dtype=torch.long)
    labels = torch.tensor([t for e in items for t in e.labels] + [IGNORE_INDEX] * extra, dtype=torch.long)
    lengths = torch.tensor(sizes + [extra] * (extra > 0), dtype=torch.long)
    positions = torch.cat([torch.arange(n) for n in lengths.tolist()])
    labels[lengths.cumsum(0) - lengths] = IGNORE_INDEX
    batch = {"input_ids": ids[None], "labels": labels[None], "position_ids": positions[None], "lengths": lengths}
    if any(e.weight != 1.0 for e in items):
        weights = [e.weight for e in items] + [0.0] * (extra > 0)
        batch["weights"] = torch.tensor(weights, dtype=torch.float32).repeat_interleave(lengths)[None]
    return batch


def random_batches(count: int, batch_size: int, seed: int) -> list[list[int]]:
    """The examples in a random order, cut into batches of ``batch_size`` (the last may be short).

    The order is a seeded shuffle, like the reference trainer's random sampler. Sorting examples
    by length into batches would save padding but was measured to cost quality: similar lengths
    often mean similar answers, and batches that are less mixed trained worse (banking77, three
    seeds: validation loss 0.240 grouped against 0.177 random; see the README).
    """
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return [order[j : j + batch_size] for j in range(0, count, batch_size)]


def sequential_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Batches for evaluation: sorted by length (least padding), deterministic."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[j : j + batch_size] for j in range(0, len(order), batch_size)]
