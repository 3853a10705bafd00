"""Batched generation (greedy, or sampled for synthetic data) with left padding and the KV cache."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from rich.progress import Progress, TaskID

from tunesmith.models.load import LoadedModel
from tunesmith.console import make_progress


def left_padded(prompts: Sequence[list[int]], idx: Sequence[int], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompts ``idx`` as one left-padded batch (every row ends where its answer begins) and its attention mask."""
    width = max(len(prompts[i]) for i in idx)
    ids = torch.full((len(idx), width), pad, dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    for row, i in enumerate(idx):
        ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
        mask[row, width - len(prompts[i]):] = 1
    return ids, mask


@contextmanager
def progress_task(progress: tuple[Progress, TaskID] | None, label: str, total: int) -> Iterator[tuple[Progress, TaskID]]:
    """A caller's progress bar and task, or a bar of its own for ``total`` items."""
    if progress is not None:
        yield progress
        return
    with make_progress() as bar:
        yield bar, bar.add_task(label, total=total, info="")


@torch.no_grad()
def generate_batched(lm: LoadedModel, prompts: Sequence[list[int]], max_new_tokens: int, batch_size: int,
                     label: str = "generate", temperature: float = 0.0, seed: int = 0,
                     progress: tuple[Progress, TaskID] | None = None) -> list[str]:
    """Generate an answer for each tokenised prompt, in batches: greedily, or sampled with ``temperature``.

    Prompts are sorted by length so each batch carries little padding, left-padded so every
    sequence ends where generation starts, and decoded with the KV cache by ``generate``.

    Args:
        lm: The model and tokenizer.
        prompts: Token ids of each prompt.
        max_new_tokens: Longest answer.
        batch_size: Prompts per batch.
        label: Progress-bar description.
        temperature: 0 decodes greedily (evaluation); above 0 samples with top-p 0.95 (paraphrases).
        seed: Seed for sampling, so that the same call gives the same texts.
        progress: A progress bar and task to advance (a caller's bar over several calls); None shows its own.

    Returns:
        The decoded answers (special tokens removed), in the order of ``prompts``.
    """
    tok, model = lm.tokenizer, lm.model
    pad = tok.pad_token_id
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    outputs: list[str] = [""] * len(prompts)
    model.eval()
    sampling = {"do_sample": True, "temperature": temperature, "top_p": 0.95, "top_k": None} if temperature > 0 else \
        {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    if temperature > 0:
        torch.manual_seed(seed)
    with progress_task(progress, label, len(prompts)) as (bar, task):
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            ids, mask = left_padded(prompts, idx, pad)
            width = ids.shape[1]
            with lm.autocast():
                out = model.generate(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                                     max_new_tokens=max_new_tokens, use_cache=True,
                                     pad_token_id=pad, eos_token_id=tok.eos_token_id, **sampling)
            for row, i in enumerate(idx):
                outputs[i] = tok.decode(out[row, width:], skip_special_tokens=True).strip()
            bar.update(task, advance=len(idx))
    return outputs
