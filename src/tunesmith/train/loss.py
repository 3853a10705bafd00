"""The causal-LM loss computed only where there are labels."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from peft import PeftModel
from torch import nn
from transformers import DynamicCache

from tunesmith.data.encode import IGNORE_INDEX, Encoded
from tunesmith.models.adapters import prompt_learning
from tunesmith.fastpath.attention import packed
from tunesmith.fastpath.apply import frozen_cast
from tunesmith.train.batching import MIN_PREFIX_TOKENS, collate, padded_length, sequential_batches, shared_prefix


def _split_model(model: Any) -> tuple[Any, Any]:
    """The backbone and the head: the language-model head, or a classification head (``score``) over the labels."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    head = base.get_output_embeddings()
    return getattr(base, base.base_model_prefix), head if head is not None else base.score


#: The selected positions go through the head in a count rounded up to a multiple of this, so the
#: head's products see a few shapes rather than one per batch (see
#: :func:`~tunesmith.train.batching.collate_packed` on why new shapes cost memory).
HEAD_ROWS_MULTIPLE = 16


def _apply_head(head: Any, hidden: torch.Tensor) -> torch.Tensor:
    """The output head on the selected positions (rows of ``hidden``), its frozen weight cast once.

    The rows are padded with zeros to :data:`HEAD_ROWS_MULTIPLE` for the product and the padding's
    logits dropped again.
    """
    rows = hidden.shape[0]
    hidden = F.pad(hidden, (0, 0, 0, padded_length(rows, HEAD_ROWS_MULTIPLE) - rows))
    device = hidden.device.type
    if type(head) is not nn.Linear or head.weight.requires_grad or not torch.is_autocast_enabled(device):
        return head(hidden)[:rows]
    dtype = torch.get_autocast_dtype(device)
    bias = None if head.bias is None else head.bias.to(dtype)
    return F.linear(hidden.to(dtype), frozen_cast(head.weight, dtype), bias)[:rows]


def completion_loss(model: Any, batch: dict[str, torch.Tensor], after: DynamicCache | None = None) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over completion tokens, and how many there were.

    The language-model head is applied only at positions that predict a labelled token:
    with a 49k-word vocabulary and short answers, most positions carry no label, and
    projecting them all would cost a large share of each step for nothing.

    Args:
        model: A causal LM, optionally wrapped by PEFT (adapters live inside the backbone).
        batch: A right-padded batch (``input_ids``, ``attention_mask``, ``labels``, as
            :func:`~tunesmith.train.batching.collate` makes) or a packed row (``input_ids``,
            ``labels``, ``position_ids``, ``lengths``, optionally ``prefix``, from
            :func:`~tunesmith.train.batching.collate_packed`); optionally ``weights`` (per example or
            per token) that multiply the token losses.
        after: The key/value cache of an opening that every example of a right-padded batch shares
            (:func:`prefix_cache`, one row): the batch then holds only each example's tokens after it.

    Returns:
        (sum of (weighted) token losses, number of labelled tokens).

    Raises:
        ValueError: A packed row for a prompt-learning model.
    """
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    if prompt_learning(model):
        if "lengths" in batch:
            raise ValueError("prefix and prompt tuning add virtual tokens to each row and cannot train on packed rows")
        # Prefix and prompt tuning act inside PEFT's own forward (virtual tokens, past keys), so the
        # full model runs and the virtual positions are dropped from the front of the logits.
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logits = out[:, out.shape[1] - batch["input_ids"].shape[1]:][:, :-1][keep].float()
    else:
        backbone, head = _split_model(model)
        if "lengths" in batch:
            with packed(batch["lengths"], int(batch.get("prefix", 0))):
                hidden = backbone(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                                  use_cache=False).last_hidden_state
        elif after is not None:
            rows = batch["input_ids"].shape[0]
            past = repeat_cache(after, rows)
            mask = torch.cat([batch["attention_mask"].new_ones(rows, past.get_seq_length()), batch["attention_mask"]], 1)
            hidden = backbone(input_ids=batch["input_ids"], attention_mask=mask, past_key_values=past,
                              use_cache=True).last_hidden_state
        else:
            # Right padding: the causal mask alone already keeps every labelled position from
            # seeing padding, and without a padding mask attention can take its causal fast path.
            hidden = backbone(input_ids=batch["input_ids"], use_cache=False).last_hidden_state
        logits = _apply_head(head, hidden[:, :-1][keep]).float()
    n = int(keep.sum())
    if "weights" not in batch:
        return F.cross_entropy(logits, targets[keep], reduction="sum"), n
    per_token = F.cross_entropy(logits, targets[keep], reduction="none")
    weights = batch["weights"].to(per_token.dtype)
    weights = weights[:, 1:] if weights.dim() == 2 else weights[:, None].expand_as(targets)  # per token or per row
    return (per_token * weights[keep]).sum(), n


@torch.no_grad()
def prefix_cache(model: Any, prefix: Sequence[int], device: torch.device) -> DynamicCache:
    """The key/value cache of ``prefix`` (one row) in ``model``'s backbone, adapters included."""
    backbone, _ = _split_model(model)
    cache = DynamicCache()
    backbone(input_ids=torch.tensor([list(prefix)], device=device), past_key_values=cache, use_cache=True)
    return cache


def repeat_cache(cache: DynamicCache, rows: int) -> DynamicCache:
    """A copy of a one-row cache for a batch of ``rows`` (the original stays one row, for the next batch)."""
    out = copy.deepcopy(cache)
    out.batch_repeat_interleave(rows)
    return out


@torch.no_grad()
def evaluate_loss(model: Any, encoded: Sequence[Encoded], pad_id: int, batch_size: int, device: torch.device,
                  autocast: Any) -> float:
    """Mean completion-token loss over examples (``nan`` when there are none).

    Args:
        model: The model, in eval mode.
        encoded: Encoded examples.
        pad_id: Padding token id.
        batch_size: Examples per forward pass.
        device: The model's device.
        autocast: A context-manager factory for the chosen precision.
    """
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    # The opening every example shares (a system prompt listing the labels) is computed once; each
    # batch then runs only what follows it. With a 570-token label list, the test set's loss
    # recomputed it for every row and took longer than the answers.
    prefix = 0 if prompt_learning(model) else shared_prefix(encoded)
    after = None
    if prefix >= MIN_PREFIX_TOKENS:
        with autocast():
            after = prefix_cache(model, encoded[0].input_ids[:prefix], device)
        encoded = [replace(e, input_ids=e.input_ids[prefix:], labels=e.labels[prefix:]) for e in encoded]
    for idx in sequential_batches([len(e.input_ids) for e in encoded], batch_size):
        batch = {k: v.to(device) for k, v in collate([encoded[i] for i in idx], pad_id).items()}
        with autocast():
            loss_sum, n = completion_loss(model, batch, after)
        total += float(loss_sum)
        count += n
    if was_training:
        model.train()
    return total / count if count else float("nan")
