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
costs only in the attention products. Where the examples open with the same tokens (a system
prompt), the row carries them once and every example's layout reads that one copy, whose
gradient is then the sum of what each example sends back. Padded batches are attended the same
way, as a packed row of equal-length examples.

The attention is one autograd function (:class:`_PackedCausal`): q, k and v are cast to the
compute dtype once while being gathered, the causal softmax is one pass of a C kernel
(:mod:`tunesmith.fastpath.native`: scale, mask, softmax in fp32, bf16 out) and so is its backward,
and the backward pass reads gradients back with the same row indices instead of autograd's
zero-filled scatter. What it keeps is the padded bf16 q, k, v and the bf16 probabilities (autograd
kept the fp32 softmax output besides). On the embedded model at 726 packed tokens a layer's
attention took 9.1 ms forward and backward through autograd's gathers and takes 4.5 ms this way. The
softmax backward reads the bf16 probabilities that the forward product used, where SDPA's
backward recomputes them in fp32: results agree with SDPA within bf16 rounding
(``tests/models/test_fast_attention.py``), and in fp32 to 1e-5.

The fast path runs only where it is exact and pays: causal self-attention with no padding mask
(training batches are right-padded, so a causal mask alone is exact at every labelled position;
see :func:`tunesmith.train.loss.completion_loss`), no attention dropout, no soft-capping, sinks or
biases. Examples of a packed row longer than :data:`MAX_LENGTH`, where the softmax kept for
backward (heads x length^2 per example) would outweigh the rest of a layer's activations, are
attended in the same per-example layout by PyTorch's fused causal kernel instead
(:func:`_long_causal`). Everything else, generation with its cache included, goes to
transformers' own SDPA function.
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

from tunesmith.fastpath.native import library

NAME = "tunesmith_causal"
MAX_LENGTH = 256
#: The padded layout's width is rounded up to a multiple of this, so that the attention products
#: see a few shapes rather than one per longest example (see ``collate_packed`` on why new shapes
#: cost memory); the extra slots are causally unseen like the rest of the padding.
LAYOUT_MULTIPLE = 16
_UNSUPPORTED = ("softcap", "s_aux", "sinks", "position_bias")


@functools.cache
def _causal_bias(device: torch.device) -> torch.Tensor:
    """Additive causal mask for the longest sequence this path takes; shorter ones use its corner."""
    return torch.full((MAX_LENGTH, MAX_LENGTH), float("-inf"), device=device).triu(1)


@dataclass(frozen=True)
class Packing:
    """Where the examples of a packed row lie, as indices between the row and a padded layout.

    A row may open with a prefix shared by all its examples
    (:func:`tunesmith.train.batching.collate_packed`): each example's slots in the layout then start
    with the prefix's positions, so every example attends to it as to its own first tokens.

    Attributes:
        lengths: Tokens of each example after the shared prefix, in row order.
        prefix: Tokens of the shared prefix at the start of the row (0: none).
        longest: The width of the padded layout: the longest example, prefix included, rounded up to
            :data:`LAYOUT_MULTIPLE`.
        gather: For each slot of the padded layout (examples x longest, flattened), the row position
            it reads; slots past an example's end repeat its last token (causality keeps them unseen).
        scatter: For each row position, its slot in the padded layout (the first example's copy for
            the prefix).
        gather_or_zero: ``gather`` with the slots that send no output back reading row ``total`` (a
            row of zeros appended by the caller): how gradients reach the padded layout. Those are
            the slots past an example's end and the prefix's copies in all but the first example.
    """

    lengths: tuple[int, ...]
    prefix: int
    longest: int
    gather: torch.Tensor
    scatter: torch.Tensor
    gather_or_zero: torch.Tensor

    @classmethod
    def of(cls, lengths: torch.Tensor, prefix: int = 0) -> Packing:
        """The packing of examples with these token counts (a 1-D integer tensor) after a shared ``prefix``."""
        device = lengths.device
        longest = -(-(prefix + int(lengths.max())) // LAYOUT_MULTIPLE) * LAYOUT_MULTIPLE  # MAX_LENGTH is a multiple
        starts = prefix + lengths.cumsum(0) - lengths
        offsets = torch.arange(longest, device=device)
        own = starts[:, None] + torch.minimum(offsets[None, :] - prefix, lengths[:, None] - 1)
        gather = torch.where(offsets[None, :] < prefix, offsets[None, :], own)
        slots = (torch.arange(len(lengths), device=device) * longest).repeat_interleave(lengths)
        total = prefix + int(lengths.sum())
        scatter = torch.cat([offsets[:prefix], slots + prefix + torch.arange(prefix, total, device=device)
                             - starts.repeat_interleave(lengths)])
        sends = (offsets[None, :] < prefix + lengths[:, None]) & (offsets[None, :] >= prefix)
        sends[0, :prefix] = True
        or_zero = torch.where(sends, gather, total)
        return cls(tuple(int(n) for n in lengths), prefix, longest, gather.flatten(), scatter, or_zero.flatten())

    @property
    def total(self) -> int:
        return self.prefix + sum(self.lengths)

    def rows(self, layout: torch.Tensor) -> torch.Tensor:
        """Gradients in the padded layout ``[examples x longest, width]`` summed back onto the row's positions.

        Each position has one slot, except the prefix's positions, which have one in every example.
        """
        out = layout.index_select(0, self.scatter)
        if self.prefix:
            copies = layout.view(len(self.lengths), self.longest, -1)[:, :self.prefix]
            out[:self.prefix] = copies.sum(0, dtype=torch.float32).to(out.dtype)
        return out

    def block_mask(self) -> torch.Tensor:
        """The equivalent boolean mask for SDPA: causal within each example and its prefix, nothing across."""
        device = self.gather.device
        ids = torch.arange(-1, len(self.lengths), device=device).repeat_interleave(
            torch.tensor((self.prefix, *self.lengths), device=device))
        causal = torch.ones(self.total, self.total, dtype=torch.bool, device=device).tril()
        return (causal & ((ids[:, None] == ids[None, :]) | (ids[None, :] == -1)))[None, None]


@functools.lru_cache(maxsize=64)
def _equal_rows(batch: int, length: int, device: torch.device) -> Packing:
    """The packing of ``batch`` examples of ``length`` tokens each, made once rather than in every layer."""
    return Packing.of(torch.full((batch,), length, dtype=torch.long, device=device))


_packing: ContextVar[Packing | None] = ContextVar("tunesmith_packing", default=None)


@contextmanager
def packed(lengths: torch.Tensor, prefix: int = 0) -> Iterator[Packing]:
    """Within this block, a single-row forward pass of ``prefix + sum(lengths)`` tokens attends per example.

    With ``prefix``, the row opens with that many tokens that every example sees before its own.
    """
    token = _packing.set(Packing.of(lengths, prefix))
    try:
        yield _packing.get()
    finally:
        _packing.reset(token)


def _rows(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[1, heads, T, D]`` -> ``[T, heads * D]`` in ``dtype`` (a view where the memory is already token-major)."""
    return x[0].transpose(0, 1).to(dtype).reshape(x.shape[2], -1)


def _softmax(scores: torch.Tensor, length: int, scale: float) -> torch.Tensor:
    """Causal softmax of ``scores * scale`` over the last dimension, row ``r`` seeing ``r % length + 1`` keys."""
    lib = library() if scores.dtype == torch.bfloat16 and scores.device.type == "cpu" else None
    if lib is None:
        bias = _causal_bias(scores.device)[:length, :length]
        x = scores.float().view(-1, length, length) * scale + bias
        return x.softmax(-1).to(scores.dtype).view_as(scores)
    scores = scores.contiguous()
    probs = torch.empty_like(scores)
    lib.tunesmith_causal_softmax_bf16(scores.data_ptr(), probs.data_ptr(), scores.numel() // length, length, scale)
    return probs


def _softmax_backward(probs: torch.Tensor, grad: torch.Tensor, length: int, scale: float) -> torch.Tensor:
    """Gradient of the scores from that of :func:`_softmax`'s probabilities (in fp32, rounded to their dtype)."""
    lib = library() if probs.dtype == torch.bfloat16 and probs.device.type == "cpu" else None
    if lib is None:
        p, g = probs.float(), grad.float()
        return (p * (g - (g * p).sum(-1, keepdim=True)) * scale).to(probs.dtype)
    grad = grad.contiguous()
    out = torch.empty_like(probs)
    lib.tunesmith_causal_softmax_backward_bf16(probs.data_ptr(), grad.data_ptr(), out.data_ptr(),
                                               probs.numel() // length, length, scale)
    return out


class _PackedCausal(torch.autograd.Function):
    """Causal attention within each example of a packed row, in ``dtype``, with hand-written backward.

    Rows are gathered into a padded layout ``[examples x kv heads, groups x longest, dim]``, attended
    with two batched products around :func:`_softmax`, and scattered back. Backward gathers the
    output gradient the same way (zeros at padded slots, so no padded query passes gradient on,
    which also leaves padded keys and values without any) and returns each input's gradient by
    reading its rows back with ``scatter``. Kept for backward: the padded bf16 q, k, v and the bf16
    probabilities.
    """

    @staticmethod
    def forward(ctx: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, pack: Packing, scale: float,
                dtype: torch.dtype) -> torch.Tensor:
        _, heads, total, dim = query.shape
        kv = key.shape[1]
        groups, examples, longest = heads // kv, len(pack.lengths), pack.longest
        q = _rows(query, dtype).index_select(0, pack.gather).view(examples, longest, kv, groups, dim)
        q = q.permute(0, 2, 3, 1, 4).reshape(examples * kv, groups * longest, dim)
        k, v = (_rows(t, dtype).index_select(0, pack.gather).view(examples, longest, kv, dim)
                .transpose(1, 2).reshape(examples * kv, longest, dim) for t in (key, value))
        probs = _softmax(torch.bmm(q, k.transpose(1, 2)), longest, scale)
        out = torch.bmm(probs, v).view(examples, kv, groups, longest, dim).permute(0, 3, 1, 2, 4)
        out = out.reshape(examples * longest, heads * dim).index_select(0, pack.scatter)
        ctx.save_for_backward(q, k, v, probs)
        ctx.pack, ctx.scale, ctx.dtypes = pack, scale, (query.dtype, key.dtype, value.dtype)
        return out.view(1, total, heads, dim)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        q, k, v, probs = ctx.saved_tensors
        pack = ctx.pack
        _, total, heads, dim = grad.shape
        kv = k.shape[0] // len(pack.lengths)
        groups, examples, longest = heads // kv, len(pack.lengths), pack.longest
        g = grad.reshape(total, heads * dim).to(q.dtype)
        g = torch.cat([g, g.new_zeros(1, heads * dim)]).index_select(0, pack.gather_or_zero)
        g = g.view(examples, longest, kv, groups, dim).permute(0, 2, 3, 1, 4).reshape(examples * kv, groups * longest, dim)
        grad_v = torch.bmm(probs.transpose(1, 2), g)
        grad_scores = _softmax_backward(probs, torch.bmm(g, v.transpose(1, 2)), longest, ctx.scale)
        grad_q = torch.bmm(grad_scores, k).view(examples, kv, groups, longest, dim).permute(0, 3, 1, 2, 4)
        grad_k = torch.bmm(grad_scores.transpose(1, 2), q)

        def rows(t: torch.Tensor, n_heads: int, dtype: torch.dtype) -> torch.Tensor:
            t = pack.rows(t.reshape(examples * longest, n_heads * dim))
            return t.view(total, n_heads, dim).transpose(0, 1)[None].to(dtype)

        kv_rows = lambda t: t.view(examples, kv, longest, dim).transpose(1, 2)  # noqa: E731
        return (rows(grad_q, heads, ctx.dtypes[0]), rows(kv_rows(grad_k), kv, ctx.dtypes[1]),
                rows(kv_rows(grad_v), kv, ctx.dtypes[2]), None, None, None)


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
    if ((attention_mask is not None and pack is None) or key.shape[2] != length or (width > MAX_LENGTH and pack is None)
            or dropout
            or is_causal is False or not getattr(module, "is_causal", True) or query.device.type != "cpu"
            or (window is not None and window < width) or any(kwargs.get(k) is not None for k in _UNSUPPORTED)):
        if pack is not None:  # the packed row on SDPA: its mask must keep the examples apart
            attention_mask = pack.block_mask()
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    scale = scaling if scaling is not None else dim**-0.5
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else query.dtype
    if pack is not None:
        attend = _PackedCausal.apply if width <= MAX_LENGTH else _long_causal
        return attend(query, key, value, pack, scale, dtype), None
    # A batch of equal-length rows is a packed row of examples of that length.
    pack = _equal_rows(batch, length, query.device)
    as_row = lambda t: t.transpose(0, 1).reshape(1, t.shape[1], batch * length, dim)  # noqa: E731
    out = _PackedCausal.apply(as_row(query), as_row(key), as_row(value), pack, scale, dtype)
    return out.view(batch, length, heads, dim), None


def _long_causal(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, pack: Packing, scale: float,
                 dtype: torch.dtype) -> torch.Tensor:
    """Attention within each example of a packed row of long examples: SDPA's fused causal kernel per example.

    Beyond :data:`MAX_LENGTH` the probabilities :class:`_PackedCausal` keeps for backward
    (heads x length^2 per example) outweigh the rest of a layer, so the examples are gathered into
    the same padded layout ``[examples, heads, longest, dim]`` and given to PyTorch's flash kernel,
    which keeps only q, k, v, the output and one log-sum-exp per row. The row itself must never go
    to SDPA whole with a block mask: that attends every token to every other (16 examples of 512
    tokens: 64 times the products of this layout) and keeps the row-by-row probabilities; it
    made a training step of that shape 76 s and 14 GB, which this path takes in a fraction
    (``bench/train_speed.py --long 512``). Autograd does the backward: the gathers' gradients sum
    the prefix's copies (or, for a long prefix attended once, its expanded keys and values) back
    onto the one in the row.
    """
    _, heads, total, dim = query.shape
    examples, prefix = len(pack.lengths), pack.prefix
    sdpa = functools.partial(torch.nn.functional.scaled_dot_product_attention, scale=scale,
                             enable_gqa=key.shape[1] != heads)
    width = pack.longest - prefix  # of each example's own tokens in the layout
    if prefix < width:
        # No prefix, or one shorter than the examples: each example gets its copy, as in the short path.
        def layout(t: torch.Tensor) -> torch.Tensor:
            n = t.shape[1]
            return _rows(t, dtype).index_select(0, pack.gather).view(examples, pack.longest, n, dim).transpose(1, 2)

        out = sdpa(layout(query), layout(key), layout(value), is_causal=True).transpose(1, 2)
        return out.reshape(examples * pack.longest, heads, dim).index_select(0, pack.scatter).view(1, total, heads, dim)
    # A prefix longer than the examples' own tokens (a label list) attends within itself once; each
    # example's own queries then read its keys and their own, causally: own query i sees the prefix
    # and own keys up to i (a bottom-right-aligned causal mask; PyTorch's CPU flash kernel takes it
    # and still keeps no probabilities). A copy per example would compute the prefix's queries once
    # per example: 16 times the attention of a 570-token label list.
    slots = pack.gather.view(examples, pack.longest)[:, prefix:].reshape(-1)

    def own(t: torch.Tensor) -> torch.Tensor:
        return _rows(t, dtype).index_select(0, slots).view(examples, width, t.shape[1], dim).transpose(1, 2)

    def shared(t: torch.Tensor) -> torch.Tensor:
        return _rows(t, dtype)[:prefix].view(prefix, t.shape[1], dim).transpose(0, 1)[None]

    head = sdpa(shared(query), shared(key), shared(value), is_causal=True)[0].transpose(0, 1).reshape(prefix, heads, dim)
    keys, values = (torch.cat([shared(t).expand(examples, -1, -1, -1), own(t)], dim=2) for t in (key, value))
    mask = torch.ones(width, prefix + width, dtype=torch.bool, device=query.device).tril(prefix)
    rest = sdpa(own(query), keys, values, attn_mask=mask).transpose(1, 2).reshape(examples * width, heads, dim)
    scatter = pack.scatter[prefix:]
    scatter = scatter // pack.longest * width + scatter % pack.longest - prefix
    return torch.cat([head, rest.index_select(0, scatter)]).view(1, total, heads, dim)


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
