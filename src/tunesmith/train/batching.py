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


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all ``sequences`` have in common (0 for fewer than two)."""
    if len(sequences) < 2:
        return 0
    first = sequences[0]
    common = min(len(s) for s in sequences)
    for s in sequences[1:]:
        common = next((i for i, (a, b) in enumerate(zip(first[:common], s)) if a != b), common)
    return common


def shared_prefix(items: Sequence[Encoded]) -> int:
    """How many leading tokens every example of a batch has in common and can share in a packed row.

    The longest common prefix of the examples' ids, cut so that the token after it is unlabelled in
    every example: the prediction of a labelled token needs its example's own previous position.
    0 for fewer than two examples.
    """
    if len(items) < 2:
        return 0
    common = common_prefix_length([e.input_ids for e in items])
    labelled = min(next((i for i, t in enumerate(e.labels) if t != IGNORE_INDEX), len(e.labels)) for e in items)
    return max(0, min(common, labelled - 1))


#: A shared opening shorter than this is not worth a key/value cache of its own (evaluation, inference).
MIN_PREFIX_TOKENS = 32

#: Tokens of one packed forward pass, at most (a batch whose row would be longer is trained in
#: several passes, gradients accumulated). Past a few thousand tokens a longer row buys no speed and
#: costs memory: 16 examples of 512 tokens trained at the same 12-13 s a step in one row of 8,192
#: tokens as in two of 4,096, with a peak of 9.4 GiB against 5.3 GiB (embedded model, bf16, measured).
MAX_PASS_TOKENS = 4096


def packed_length(items: Sequence[Encoded], share_prefix: bool) -> int:
    """Tokens of the row :func:`collate_packed` makes of ``items`` (before rounding up)."""
    prefix = shared_prefix(items) if share_prefix else 0
    return sum(len(e.input_ids) for e in items) - prefix * (len(items) - 1)


def packed_passes(items: Sequence[Encoded], share_prefix: bool, limit: int | None = None) -> list[list[Encoded]]:
    """A batch cut into consecutive parts of about equal size whose packed rows hold about ``limit`` tokens at most.

    Counted as packed (a shared opening once), so a batch whose examples share a long label list
    stays one pass. A part has one example at least, however long. ``limit`` defaults to
    :data:`MAX_PASS_TOKENS`.
    """
    parts = min(len(items), -(-packed_length(items, share_prefix) // (limit or MAX_PASS_TOKENS)))
    if parts <= 1:
        return [list(items)]
    size = -(-len(items) // parts)
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def collate_packed(items: Sequence[Encoded], pad_id: int = 0, multiple: int = 1,
                   share_prefix: bool = False) -> dict[str, torch.Tensor]:
    """Concatenate a batch into one row; each example keeps its own positions.

    ``position_ids`` restart at 0 for every example and ``lengths`` says where each one ends, so
    attention can be kept inside each example (:func:`tunesmith.fastpath.attention.packed`).
    The first token of every example gets no label: in the row it would be predicted from the
    previous example's last token, which an unpacked batch never does. A ``weights`` tensor (one
    per token) is added only when some example's weight is not 1.

    With ``share_prefix``, the tokens that open every example (:func:`shared_prefix`: a system
    prompt, an instruction) go into the row once, first, and each example contributes only the rest;
    ``prefix`` in the batch says how many there are and ``lengths`` then counts the rest of each
    example. Every example attends to the one copy as it would to its own, so the loss and its
    gradients are those of the unshared row (a causal prefix computes the same whatever follows it;
    its gradient is the sum of what each example sends back), for the prefix's share of the work.
    One difference remains under adapter dropout: the shared tokens draw one dropout mask for the
    batch instead of one per example.

    With ``multiple`` above 1 the row is rounded up to a multiple of it by one more segment of
    ``pad_id`` tokens with no labels, attended apart like an example (it sees a shared prefix too;
    without labels, nothing flows back from it). Why: oneDNN, which runs
    PyTorch's bf16 products on the CPU, compiles and keeps code for every new matrix shape, about
    0.6 MB each, and never frees it; a row length new at every step grew the embedded model's
    process by 16 MB per step (measured), while a few rounded lengths stop the growth after the
    first steps.
    """
    prefix = shared_prefix(items) if share_prefix else 0
    head = list(items[0].input_ids[:prefix])
    sizes = [len(e.input_ids) - prefix for e in items]
    used = prefix + sum(sizes)
    extra = padded_length(used, multiple) - used
    ids = torch.tensor(head + [t for e in items for t in e.input_ids[prefix:]] + [pad_id] * extra, dtype=torch.long)
    labels = torch.tensor([IGNORE_INDEX] * prefix + [t for e in items for t in e.labels[prefix:]]
                          + [IGNORE_INDEX] * extra, dtype=torch.long)
    lengths = torch.tensor(sizes + [extra] * (extra > 0), dtype=torch.long)
    positions = torch.cat([torch.arange(prefix)] + [torch.arange(prefix, prefix + n) for n in lengths.tolist()])
    labels[prefix + lengths.cumsum(0) - lengths] = IGNORE_INDEX
    batch = {"input_ids": ids[None], "labels": labels[None], "position_ids": positions[None], "lengths": lengths}
    if prefix:
        batch["prefix"] = torch.tensor(prefix)
    if any(e.weight != 1.0 for e in items):
        weights = [e.weight for e in items] + [0.0] * (extra > 0)
        per_token = torch.tensor(weights, dtype=torch.float32).repeat_interleave(lengths)
        batch["weights"] = torch.cat([torch.zeros(prefix), per_token])[None]
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
