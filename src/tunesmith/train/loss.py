"""The causal-LM loss computed only where there are labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from peft import PeftModel

from tunesmith.data.encode import IGNORE_INDEX, Encoded
from tunesmith.train.batching import collate, sequential_batches


def _split_model(model: Any) -> tuple[Any, Any]:
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    return getattr(base, base.base_model_prefix), base.get_output_embeddings()


def _prompt_learning(model: Any) -> bool:
    return isinstance(model, PeftModel) and model.active_peft_config.is_prompt_learning


def completion_loss(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over completion tokens, and how many there were.

    The language-model head is applied only at positions that predict a labelled token:
    with a 49k-word vocabulary and short answers, most positions carry no label, and
    projecting them all would cost a large share of each step for nothing.

    Args:
        model: A causal LM, optionally wrapped by PEFT (adapters live inside the backbone).
        batch: ``input_ids``, ``attention_mask`` and ``labels`` tensors, and optionally ``weights``
            (one per example) that multiply each example's token losses.

    Returns:
        (sum of (weighted) token losses, number of labelled tokens).
    """
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    if _prompt_learning(model):
        # Prefix and prompt tuning act inside PEFT's own forward (virtual tokens, past keys), so the
        # full model runs and the virtual positions are dropped from the front of the logits.
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logits = out[:, out.shape[1] - batch["input_ids"].shape[1]:][:, :-1][keep].float()
    else:
        backbone, head = _split_model(model)
        hidden = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        logits = head(hidden[:, :-1][keep]).float()
    n = int(keep.sum())
    if "weights" not in batch:
        return F.cross_entropy(logits, targets[keep], reduction="sum"), n
    per_token = F.cross_entropy(logits, targets[keep], reduction="none")
    weights = batch["weights"].to(per_token.dtype)[:, None].expand_as(targets)[keep]
    return (per_token * weights).sum(), n


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
    for idx in sequential_batches([len(e.input_ids) for e in encoded], batch_size):
        batch = {k: v.to(device) for k, v in collate([encoded[i] for i in idx], pad_id).items()}
        with autocast():
            loss_sum, n = completion_loss(model, batch)
        total += float(loss_sum)
        count += n
    if was_training:
        model.train()
    return total / count if count else float("nan")
