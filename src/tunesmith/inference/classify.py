"""One forward pass per batch for a model with a classification head: the probability of every label."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch
from rich.progress import Progress, TaskID

from tunesmith.console import make_progress
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
    with nullcontext(progress[0]) if progress else make_progress() as bar:
        task = progress[1] if progress else bar.add_task(label, total=len(prompts), info="")
        for idx in sequential_batches([len(p) for p in prompts], batch_size):
            width = max(len(prompts[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
                mask[row, width - len(prompts[i]):] = 1
            with lm.autocast():
                logits = lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device)).logits
            probs = torch.softmax(logits.float(), dim=-1).cpu()
            for row, i in enumerate(idx):
                out[i] = probs[row].tolist()
            bar.update(task, advance=len(idx))
    return out
