"""The gated MLP's ``silu(gate) * up`` as one autograd function that keeps two tensors instead of three.

Autograd keeps three ``[tokens, intermediate]`` tensors of a SwiGLU MLP for the backward pass:
the gate projection (for ``silu``'s gradient), ``silu(gate)`` and the up projection (for the
product's). ``silu(gate)`` is cheap to compute again, so here only ``gate`` and ``up`` are kept
and the backward pass recomputes it with the same operators on the same values, with a third
less of the MLP's activation memory (65 MB per step for the embedded model at 726 tokens).

On the CPU in bf16 both passes are one loop of a C kernel each (:mod:`tunesmith.fastpath.native`)
instead of two and four PyTorch operators, rounding where they round; the C library's ``expf``
differs from PyTorch's in the last bit, so a result can be one or two bf16 steps from theirs (the
tests bound it). Elsewhere the PyTorch operators run, bit for bit autograd's.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import SiLUActivation
from transformers.models.llama.modeling_llama import LlamaMLP

from tunesmith.fastpath.native import library
from tunesmith.fastpath.routing import route, same_code


def _kernels(*tensors: torch.Tensor) -> Any:
    """The C kernels where they serve these tensors (bf16 on the CPU), else None."""
    if all(t.dtype == torch.bfloat16 and t.device.type == "cpu" for t in tensors):
        return library()
    return None


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        lib = _kernels(gate, up)
        if lib is not None:
            gate, up = gate.contiguous(), up.contiguous()
        ctx.save_for_backward(gate, up)
        if lib is None:
            return F.silu(gate) * up
        out = torch.empty_like(gate)
        lib.tunesmith_swiglu_bf16(gate.data_ptr(), up.data_ptr(), out.data_ptr(), gate.numel())
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gate, up = ctx.saved_tensors
        lib = _kernels(gate, up, grad)
        if lib is None:
            # What autograd computes for F.silu(gate) * up: the product's gradients, then silu's.
            grad_up = grad * F.silu(gate)
            grad_gate = torch.ops.aten.silu_backward(grad * up, gate)
            return grad_gate, grad_up
        grad = grad.contiguous()
        grad_gate, grad_up = torch.empty_like(gate), torch.empty_like(up)
        lib.tunesmith_swiglu_backward_bf16(gate.data_ptr(), up.data_ptr(), grad.data_ptr(), grad_gate.data_ptr(),
                                           grad_up.data_ptr(), gate.numel())
        return grad_gate, grad_up


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up``, keeping ``gate`` and ``up`` for backward and recomputing ``silu(gate)``."""
    if gate.shape != up.shape or gate.dtype != up.dtype:
        return F.silu(gate) * up  # broadcasting or mixed dtypes: leave them to autograd
    return _SwiGLU.apply(gate, up)


def _forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))


def _is_swiglu_mlp(module: nn.Module) -> bool:
    """A module whose forward is exactly Llama's ``down_proj(act_fn(gate_proj(x)) * up_proj(x))`` with SiLU."""
    return (same_code(getattr(type(module), "forward", None), LlamaMLP.forward)
            and type(getattr(module, "act_fn", None)) in (SiLUActivation, nn.SiLU))


def use_fast_mlp(model: nn.Module) -> int:
    """Route every SwiGLU MLP of ``model`` through :func:`swiglu`; returns how many it serves now."""
    return route(model, _is_swiglu_mlp, lambda _: _forward)
