"""Batched generation (greedy, or sampled for synthetic data) with left padding and the KV cache."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from rich.progress import Progress, TaskID

from tunesmith.models.adapters import prompt_learning
from tunesmith.models.load import LoadedModel
from tunesmith.console import make_progress
from tunesmith.train.batching import MIN_PREFIX_TOKENS, common_prefix_length
from tunesmith.train.loss import prefix_cache, repeat_cache


def left_padded(prompts: Sequence[list[int]], idx: Sequence[int], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompts ``idx`` as one left-padded batch (every row ends where its answer begins) and its attention mask."""
    width = max(len(prompts[i]) for i in idx)
    ids = torch.full((len(idx), width), pad, dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    for row, i in enumerate(idx):
        ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
        mask[row, width - len(prompts[i]):] = 1
    return ids, mask


def shared_prefix_length(prompts: Sequence[list[int]]) -> int:
    """How many leading tokens every prompt has in common (each keeping at least one token of its own)."""
    if len(prompts) < 2:
        return 0
    return max(min(common_prefix_length(prompts), min(len(p) for p in prompts) - 1), 0)


class PrefixCache:
    """The key/value cache of the prompts' shared opening (system prompt, label list, few-shot examples).

    Computed once per call, for the model as it is (its adapter included), and copied for each batch,
    so that a row prefills only its own tokens. The rows' own tokens are left-padded after the
    shared opening, the padding masked out; positions follow the attention mask, so each row sees
    exactly the sequence it would see without the cache (a test pins the outputs).
    """

    def __init__(self, lm: LoadedModel, prefix: list[int]):
        self.prefix = prefix
        with lm.autocast(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers 5 renames past_key_values; 4.x knows only it
            self.cache = prefix_cache(lm.model, prefix, lm.device)  # the one evaluation's loss uses

    @classmethod
    def for_prompts(cls, lm: LoadedModel, prompts: Sequence[list[int]]) -> PrefixCache | None:
        """A cache of the prompts' shared opening, or None where there is none worth caching (or the model adds
        virtual tokens of its own: prefix and prompt tuning)."""
        n = shared_prefix_length(prompts)
        if n < MIN_PREFIX_TOKENS or prompt_learning(lm.model):
            return None
        return cls(lm, list(prompts[0][:n]))

    def batch(self, prompts: Sequence[list[int]], idx: Sequence[int], pad: int) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Input ids and mask of the rows ``idx`` (shared opening, then each row's own tokens left-padded), and the
        batch's copy of the cache."""
        own, mask = left_padded([p[len(self.prefix):] for p in prompts], idx, pad)
        n = len(idx)
        ids = torch.cat([torch.tensor([self.prefix] * n, dtype=torch.long), own], dim=1)
        mask = torch.cat([torch.ones((n, len(self.prefix)), dtype=torch.long), mask], dim=1)
        return ids, mask, repeat_cache(self.cache, n)


def batch_inputs(prompts: Sequence[list[int]], idx: Sequence[int], pad: int,
                 prefix: PrefixCache | None) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """A batch's input ids, attention mask and the ``generate`` arguments that bring the prefix cache, if any."""
    if prefix is None:
        ids, mask = left_padded(prompts, idx, pad)
        return ids, mask, {}
    ids, mask, cache = prefix.batch(prompts, idx, pad)
    return ids, mask, {"past_key_values": cache}


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
                     progress: tuple[Progress, TaskID] | None = None, prefix_cache: bool = True) -> list[str]:
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
        prefix_cache: Compute the prompts' shared opening once (:class:`PrefixCache`); the outputs are the same.

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
    cached = PrefixCache.for_prompts(lm, prompts) if prefix_cache else None
    with progress_task(progress, label, len(prompts)) as (bar, task), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # past_key_values, as transformers 4 and 5 both take it
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            ids, mask, extra = batch_inputs(prompts, idx, pad, cached)
            width = ids.shape[1]
            with lm.autocast():
                out = model.generate(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                                     max_new_tokens=max_new_tokens, use_cache=True,
                                     pad_token_id=pad, eos_token_id=tok.eos_token_id, **sampling, **extra)
            for row, i in enumerate(idx):
                outputs[i] = tok.decode(out[row, width:], skip_special_tokens=True).strip()
            bar.update(task, advance=len(idx))
    return outputs
