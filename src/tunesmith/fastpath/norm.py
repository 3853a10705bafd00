"""Llama's RMSNorm as one autograd function with a C kernel each way, for an fp32 residual stream.

Llama's ``RMSNorm.forward`` is six PyTorch operators (cast, square, mean, add, rsqrt, two
products), and autograd keeps the normalised rows in fp32 besides the input for the backward pass,
which is as many again. Under bf16 autocast the next linear layers then cast the fp32 output to
bf16 once more. Here, on the CPU with the C kernels (:mod:`tunesmith.fastpath.native`), one pass
computes the output in fp32 and its bf16 rounding together (the latter is handed to
:func:`~tunesmith.models.precision.cast_once`, where the fused LoRA layers look for it), keeping
only the input and one number per row; the backward pass is one pass too. The weight must be
frozen (LoRA and the other adapters leave it so); full fine-tuning keeps the module's own forward.
Results equal the reference within fp32 rounding: the sum of squares is taken in another order.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from tunesmith.fastpath.native import library
from tunesmith.models.precision import remember_cast
from tunesmith.fastpath.routing import route, same_code


class _RMSNorm(torch.autograd.Function):
    """``weight * (x * rsqrt(mean(x^2) + eps))`` over the last dimension, fp32 in and out; weight frozen."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float,
                low: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        lib = library()
        x = x.contiguous()
        dim = x.shape[-1]
        rows = x.numel() // dim
        y = torch.empty_like(x)
        y16 = torch.empty_like(x, dtype=torch.bfloat16) if low == torch.bfloat16 else None
        rstd = torch.empty(rows, dtype=torch.float32)
        lib.tunesmith_rms_norm(x.data_ptr(), weight.data_ptr(), y.data_ptr(), None if y16 is None else y16.data_ptr(),
                               rstd.data_ptr(), rows, dim, eps)
        ctx.save_for_backward(x, weight, rstd)
        if y16 is not None:
            ctx.mark_non_differentiable(y16)
        return y, y16

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, _: Any) -> tuple[Any, ...]:
        x, weight, rstd = ctx.saved_tensors
        grad = grad.to(torch.float32).contiguous()
        dx = torch.empty_like(x)
        library().tunesmith_rms_norm_backward(x.data_ptr(), weight.data_ptr(), rstd.data_ptr(), grad.data_ptr(),
                                              dx.data_ptr(), rstd.numel(), x.shape[-1])
        return dx, None, None, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor | None:
    """Llama's RMSNorm of ``x`` through the kernels, or None where they do not serve it.

    They serve fp32 input and weight on the CPU with a frozen weight. Under bf16 autocast the
    output's bf16 rounding is made in the same pass and remembered for ``cast_once``.
    """
    if (x.dtype != torch.float32 or weight.dtype != torch.float32 or x.device.type != "cpu" or weight.requires_grad
            or x.shape[-1] != weight.numel() or library() is None):
        return None
    autocast = torch.is_autocast_enabled("cpu")
    low = torch.get_autocast_dtype("cpu") if autocast else None
    y, y16 = _RMSNorm.apply(x, weight.contiguous(), eps, low)
    if y16 is not None:
        remember_cast(y, y16)
    return y


def _forward(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    out = rms_norm(hidden_states, self.weight, self.variance_epsilon)
    return type(self).forward(self, hidden_states) if out is None else out


def _is_llama_rms_norm(module: nn.Module) -> bool:
    """A module whose forward is exactly Llama's RMSNorm (Mistral, Qwen2 and others copy it)."""
    return (same_code(getattr(type(module), "forward", None), LlamaRMSNorm.forward)
            and isinstance(getattr(module, "weight", None), torch.Tensor) and hasattr(module, "variance_epsilon"))


def use_fast_norm(model: nn.Module) -> int:
    """Route every Llama-style RMSNorm of ``model`` through :func:`rms_norm`; returns how many it serves now."""
    return route(model, _is_llama_rms_norm, lambda _: _forward)
