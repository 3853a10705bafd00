"""One forward pass per batch for a model with a classification head: the probability of every label."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from rich.progress import Progress, TaskID

from tunesmith.inference.generate import left_padded, progress_task
from tunesmith.models.load import LoadedModel
from tunesmith.train.batching import sequential_batches


@torch.no_grad()
def classify_batched(lm: LoadedModel, prompts: Sequence[list[int]], batch_size: int, label: str = "classify",
                     progress: tuple[Progress, TaskID] | None = None) -> list[list[float]]:
    """The label probabilities of each prompt (softmax of the head's logits at the last non-padding token).

    Args:
        lm: A model loaded with a classification head (its config's ``pad_token_id`` set).
        prompts: Token ids of each prompt.
        batch_size: Prompts per forward pass (sorted by length, left-padded).
        label: Progress-bar description.
        progress: A caller's progress bar and task to advance; None shows its own.

    Returns:
        One list of probabilities per prompt, in the head's label order.
    """
    pad = lm.tokenizer.pad_token_id
    out: list[list[float]] = [[] for _ in prompts]
    lm.model.eval()
    with progress_task(progress, label, len(prompts)) as (bar, task):
        for idx in sequential_batches([len(p) for p in prompts], batch_size):
            ids, mask = left_padded(prompts, idx, pad)
            with lm.autocast():
                logits = lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device)).logits
            probs = torch.softmax(logits.float(), dim=-1).cpu()
            for row, i in enumerate(idx):
                out[i] = probs[row].tolist()
            bar.update(task, advance=len(idx))
    return out


def most_probable(labels: Sequence[str], probs: Sequence[float]) -> tuple[str, float]:
    """The label with the highest probability, and that probability."""
    best = max(range(len(probs)), key=probs.__getitem__)
    return labels[best], probs[best]
