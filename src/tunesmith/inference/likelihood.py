"""How likely a model finds given answers: the summed log-probability of each example's completion tokens.

This scores fixed answers instead of generating one, so it measures the model without any
parsing: the forgetting check uses it for the probability of the right option of a multiple-choice
question and for per-paragraph perplexity.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from tunesmith.data.encode import IGNORE_INDEX, Encoded
from tunesmith.models.load import LoadedModel
from tunesmith.train.batching import collate, sequential_batches


@torch.no_grad()
def completion_logprobs(lm: LoadedModel, encoded: Sequence[Encoded], batch_size: int) -> list[tuple[float, int]]:
    """The summed natural-log probability of each example's labelled tokens, and how many there are.

    Args:
        lm: The model (a PEFT model included; prompt-learning adapters add virtual tokens, which are cut off).
        encoded: Examples whose labels mark the tokens to score (:func:`~tunesmith.data.encode.encode_example`).
        batch_size: Examples per forward pass.

    Returns:
        ``(log-probability, tokens)`` per example, in the order given.
    """
    out: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    model = lm.model
    was_training = model.training
    model.eval()
    try:
        for idx in sequential_batches([len(e.input_ids) for e in encoded], batch_size):
            batch = {k: v.to(lm.device) for k, v in collate([encoded[i] for i in idx], lm.tokenizer.pad_token_id).items()}
            with lm.autocast():
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            logits = logits[:, logits.shape[1] - batch["input_ids"].shape[1]:]  # virtual tokens come first
            targets = batch["labels"][:, 1:]
            logp = -F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets.clamp(min=0), reduction="none")
            keep = targets != IGNORE_INDEX
            sums, counts = (logp * keep).sum(dim=1), keep.sum(dim=1)
            for row, i in enumerate(idx):
                out[i] = (float(sums[row]), int(counts[row]))
    finally:
        if was_training:
            model.train()
    return out
