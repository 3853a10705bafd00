"""Dropout with a cheaper random mask, for the adapters' input dropout.

LoRA applies dropout to the input of every adapted layer: 210 masks per forward pass for a
30-block model with all seven linear layers adapted. On the CPU, ``torch.bernoulli_`` draws one
random number per element and took a fifth of a whole training step of the embedded model
(profiled: 20.6% of step time); even drawing 64-bit numbers with ``random_`` and cutting each
into four 16-bit ones (this module's first version) left masks at a sixth of the step.

Here a mask is a function of a seed: element ``i`` is kept when the 16-bit lane ``i % 4`` of
word ``i // 4`` of SplitMix64 at that seed, read as a signed number, is at least
``round(p * 65536) - 32768`` (the keep probability is ``1 - p`` rounded to 1/65536). Each mask
takes one 64-bit draw from PyTorch's default generator for its seed, so ``torch.manual_seed`` and
saved generator states make it reproducible; nothing else is kept for the backward pass, which
computes the mask again. On the CPU a C kernel (:mod:`tunesmith.fastpath.native`) computes and applies
the mask in one pass (52 us for a 726 x 576 bf16 input, against 800 us for ``random_`` alone);
elsewhere, or without a C compiler, PyTorch operators compute the very same mask
(:func:`keep_mask`, the reference the tests pin the kernel to).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tunesmith.fastpath.native import library

_LEVELS = 1 << 16
_MASK64 = (1 << 64) - 1
_GAMMA, _MIX1, _MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _signed(value: int) -> int:
    """An unsigned 64-bit constant as the int64 with the same bits."""
    value &= _MASK64
    return value - (1 << 64) if value >> 63 else value


def _shifted(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bits (PyTorch's ``>>`` on int64 copies the sign bit)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def _words(count: int, seed: int, device: torch.device) -> torch.Tensor:
    """SplitMix64's words 0..count-1 for ``seed``, as int64 (integer products wrap, as in C)."""
    z = torch.arange(1, count + 1, dtype=torch.int64, device=device) * _signed(_GAMMA) + _signed(seed)
    z = (z ^ _shifted(z, 30)) * _signed(_MIX1)
    z = (z ^ _shifted(z, 27)) * _signed(_MIX2)
    return z ^ _shifted(z, 31)


def threshold(p: float) -> int:
    """The signed 16-bit level at or above which an element is kept (dropout probability ``p``)."""
    return round(p * _LEVELS) - _LEVELS // 2


def draw_seed() -> int:
    """A mask seed: one 64-bit draw from PyTorch's default CPU generator."""
    return int(torch.empty((), dtype=torch.int64).random_(-(1 << 63), None)) & _MASK64


def keep_mask(shape: torch.Size, p: float, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The boolean mask of ``shape`` for ``seed``: True (kept) with probability ``1 - p`` (to 1/65536)."""
    n = shape.numel()
    lanes = _words((n + 3) // 4, seed, torch.device(device)).view(torch.int16)[:n]
    return (lanes >= threshold(p)).view(shape)


def apply_keep(x: torch.Tensor, p: float, seed: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` with the elements that the mask for ``seed`` drops set to zero (no rescaling).

    Uses the C kernel for contiguous CPU tensors of 2- or 4-byte elements, PyTorch operators
    otherwise; both give the same values. ``out`` may be ``x`` itself (in place).
    """
    lib = library() if x.device.type == "cpu" and x.is_contiguous() and x.element_size() in (2, 4) else None
    if lib is None or (out is not None and not out.is_contiguous()):
        return torch.mul(x, keep_mask(x.shape, p, seed, x.device).to(x.dtype), out=out)
    out = torch.empty_like(x, memory_format=torch.contiguous_format) if out is None else out
    kernel = lib.tunesmith_keep16 if x.element_size() == 2 else lib.tunesmith_keep32
    kernel(x.data_ptr(), out.data_ptr(), x.numel(), seed, threshold(p))
    return out


def keep_scale(p: float) -> float:
    """What kept elements are multiplied by, as ``F.dropout`` does (nothing is kept at ``p = 1``)."""
    return 1.0 / (1.0 - p) if p < 1 else 0.0


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, p: float) -> torch.Tensor:
        ctx.p, ctx.seed = p, draw_seed()
        return apply_keep(x.contiguous(), p, ctx.seed).mul_(keep_scale(p))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return apply_keep(grad.contiguous(), ctx.p, ctx.seed).mul_(keep_scale(ctx.p)), None


class FastDropout(nn.Dropout):
    """``nn.Dropout`` with the seeded mask of :func:`keep_mask`; identical in evaluation mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return _Dropout.apply(x, self.p)


def use_fast_dropout(model: nn.Module) -> int:
    """Replace every plain ``nn.Dropout`` inside the adapters' ``lora_dropout`` modules; returns how many.

    Only adapter dropout is replaced: the base model's own dropout layers are left as they are.
    """
    count = 0
    for name, module in model.named_modules():
        if not name.endswith("lora_dropout"):
            continue
        for key, child in module.items():
            if type(child) is nn.Dropout and child.p > 0:
                module[key] = FastDropout(child.p)
                count += 1
    return count


def use_plain_dropout(model: nn.Module) -> int:
    """Put back a plain ``nn.Dropout`` wherever :func:`use_fast_dropout` put a :class:`FastDropout`; returns how many."""
    count = 0
    for name, module in model.named_modules():
        if not name.endswith("lora_dropout"):
            continue
        for key, child in module.items():
            if type(child) is FastDropout:
                plain = nn.Dropout(child.p)
                plain.train(child.training)
                module[key] = plain
                count += 1
    return count
