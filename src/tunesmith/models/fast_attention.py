"""Causal self-attention for short training sequences on the CPU, as a transformers attention function.

On the CPU, PyTorch's fused (flash) SDPA kernel is built for long sequences: on the embedded model
at 90 tokens it took 17.5 ms per layer for forward and backward in bf16, 17% of a training step,
while two batched products and a softmax take 4.2 ms (measured; fp32: 8.1 ms against 6.8 ms).
Grouped-query heads are handled by folding each group's queries into one product with their
shared keys, so keys and values are never repeated in memory.

Training batches are packed: the examples of a batch are concatenated into one row with no
padding (:func:`tunesmith.train.batching.collate_packed`), so every linear layer works on real
tokens only, and inside :func:`packed` attention gathers each example into a right-padded
layout of its own, attends within it and scatters back: no example sees another, and padding
costs only in the attention products.

The fast path runs only where it is exact and pays: causal self-attention with no padding mask
(training batches are right-padded, so a causal mask alone is exact at every labelled position;
see :func:`tunesmith.train.loss.completion_loss`), no attention dropout, no soft-capping, sinks or
biases, and at most :data:`MAX_LENGTH` tokens, beyond which the softmax kept for backward
(heads x length^2 per sequence) would outweigh the rest of a layer's activations. Everything else,
generation with its cache included, goes to transformers' own SDPA function.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import AttentionInterface

NAME = "tunesmith_causal"
MAX_LENGTH = 256
_UNSUPPORTED = ("softcap", "s_aux", "sinks", "position_bias")


@functools.cache
def _causal_bias(device: torch.device) -> torch.Tensor:
    """Additive causal mask for the longest sequence this path takes; shorter ones use its corner."""
    return torch.full((MAX_LENGTH, MAX_LENGTH), float("-inf"), device=device).triu(1)


@dataclass(frozen=True)
class Packing:
    """Where the examples of a packed row lie, as indices between the row and a padded layout.

    Attributes:
        lengths: Tokens of each example, in row order.
        longest: The longest example: the width of the padded layout.
        gather: For each slot of the padded layout (examples x longest, flattened), the row position
            it reads; slots past an example's end repeat its last token (causality keeps them unseen).
        scatter: For each row position, its slot in the padded layout.
    """

    lengths: tuple[int, ...]
    longest: int
    gather: torch.Tensor
    scatter: torch.Tensor

    @classmethod
    def of(cls, lengths: torch.Tensor) -> Packing:
        """The packing of examples with these token counts (a 1-D integer tensor)."""
        longest = int(lengths.max())
        starts = lengths.cumsum(0) - lengths
        offsets = torch.arange(longest, device=lengths.device)
        gather = starts[:, None] + torch.minimum(offsets[None, :], lengths[:, None] - 1)
        slots = (torch.arange(len(lengths), device=lengths.device) * longest).repeat_interleave(lengths)
        scatter = slots + torch.arange(int(lengths.sum()), device=lengths.device) - starts.repeat_interleave(lengths)
        return cls(tuple(int(n) for n in lengths), longest, gather.flatten(), scatter)

    @property
    def total(self) -> int:
        return sum(self.lengths)

    def block_mask(self) -> torch.Tensor:
        """The equivalent boolean mask for SDPA: causal within each example, nothing across."""
        ids = torch.arange(len(self.lengths), device=self.gather.device).repeat_interleave(
            torch.tensor(self.lengths, device=self.gather.device))
        causal = torch.ones(self.total, self.total, dtype=torch.bool, device=ids.device).tril()
        return (causal & (ids[:, None] == ids[None, :]))[None, None]


_packing: ContextVar[Packing | None] = ContextVar("tunesmith_packing", default=None)


@contextmanager
def packed(lengths: torch.Tensor) -> Iterator[Packing]:
    """Within this block, a single-row forward pass of ``sum(lengths)`` tokens attends per example."""
    token = _packing.set(Packing.of(lengths))
    try:
        yield _packing.get()
    finally:
        _packing.reset(token)


def _unpacked(x: torch.Tensor, pack: Packing) -> torch.Tensor:
    """``[1, heads, total, dim]`` -> ``[examples, heads, longest, dim]``."""
    heads, dim = x.shape[1], x.shape[3]
    return x[0].index_select(1, pack.gather).view(heads, len(pack.lengths), pack.longest, dim).transpose(0, 1)


def causal_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                     is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Attention with transformers' interface: query ``[B, H, L, D]``, key and value ``[B, KV, L, D]``.

    Returns:
        The output as ``[B, L, H, D]`` and no attention weights, like ``sdpa_attention_forward``.
    """
    batch, heads, length, dim = query.shape
    pack = _packing.get()
    if pack is not None and (batch != 1 or length != pack.total or key.shape[2] != length):
        pack = None  # not the packed row (a model inside the model, say): attend as usual
    width = length if pack is None else pack.longest
    window = kwargs.get("sliding_window")
    if ((attention_mask is not None and pack is None) or key.shape[2] != length or width > MAX_LENGTH or dropout
            or is_causal is False or not getattr(module, "is_causal", True) or query.device.type != "cpu"
            or (window is not None and window < width) or any(kwargs.get(k) is not None for k in _UNSUPPORTED)):
        if pack is not None:  # the packed row on SDPA: its mask must keep the examples apart
            attention_mask = pack.block_mask()
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    if pack is not None:
        out, _ = _causal(_unpacked(query, pack), _unpacked(key, pack), _unpacked(value, pack), scaling)
        return out.reshape(-1, heads, dim).index_select(0, pack.scatter)[None], None
    return _causal(query, key, value, scaling)


def _causal(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
            scaling: float | None) -> tuple[torch.Tensor, None]:
    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    scores = torch.matmul(query.reshape(batch, kv_heads, groups * length, dim), key.transpose(-1, -2))
    scale = scaling if scaling is not None else dim**-0.5
    scores = scores.float().view(batch, kv_heads, groups, length, length) * scale
    scores = scores + _causal_bias(query.device)[:length, :length]
    probs = scores.softmax(-1).to(value.dtype).view(batch, kv_heads, groups * length, length)
    out = torch.matmul(probs, value).view(batch, heads, length, dim)
    return out.transpose(1, 2), None


AttentionInterface.register(NAME, causal_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)


def use_fast_attention(model: Any) -> bool:
    """Switch a CPU model that uses SDPA to :func:`causal_attention`; returns whether the model now uses it.

    Calling it again on a switched model changes nothing and returns True.

    Raises:
        ValueError: transformers refuses the switch for this architecture.
    """
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) == NAME:
        return True
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    if next(model.parameters()).device.type != "cpu":
        return False
    model.set_attn_implementation(NAME)
    return model.config._attn_implementation == NAME
