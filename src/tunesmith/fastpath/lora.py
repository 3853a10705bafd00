"""A LoRA linear layer as one autograd function: base product, adapter dropout and adapter products.

PEFT's ``lora.Linear`` composes modules: ``base(x) + lora_B(lora_A(dropout(x))) * scaling``. Under
bf16 autocast on the CPU that composition spends more time outside the matrix products than in
the adapter's own products (profiled on the embedded model, batch 8 x 90 tokens):

- PEFT casts the input to the adapter weights' dtype (fp32) before dropout, and autocast casts it
  back to bf16 for the product: two copies of every adapted layer's input, every step;
- dropout and its mask run in fp32 on that copy, and the dropped copy is kept for backward;
- q, k and v (and gate and up) read the same input, each casting and keeping its own bf16 copy.

Here the input is cast once per distinct tensor (q, k and v share it), dropout zeroes elements of
the bf16 copy by a seeded mask (:mod:`tunesmith.fastpath.dropout`; its ``1/(1-p)`` is folded into
the small rank-r product), and the backward pass computes exactly the gradients autograd would,
with the input gradient of the base product and of the adapter accumulated by one fused ``addmm``.
What is kept for backward is the shared bf16 input, the mask's seed and the rank-r product: the
mask is computed again from its seed, which is cheaper than keeping it.

It applies to plain LoRA layers (rsLoRA included) on ``nn.Linear`` bases; DoRA and other variants,
quantised bases, merged or disabled adapters and several active adapters keep PEFT's own forward.
"""

from __future__ import annotations

import threading
import types
from typing import Any

import torch
from peft.tuners.lora import Linear as LoraLinear
from torch import nn

from tunesmith.fastpath.dropout import apply_keep, draw_seed, keep_scale
from tunesmith.fastpath.routing import set_forward
from tunesmith.models.precision import cast_once


_scratch = threading.local()


def clear_scratch() -> None:
    """Free this thread's buffer for dropped inputs (the fast path does when training ends)."""
    _scratch.__dict__.pop("buf", None)


def _dropped(x2: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """``x2`` under the dropout mask of ``seed``, in a buffer reused from call to call.

    The dropped input lives only until the rank-r product has read it, and a fresh tensor of its
    size costs more in page faults than the masking itself (measured: 200 against 60 us for
    726 x 576 bf16), so one buffer per thread is kept and grown as needed.
    """
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.numel() < x2.numel() or buf.dtype != x2.dtype or buf.device != x2.device:
        buf = _scratch.buf = torch.empty(x2.numel(), dtype=x2.dtype, device=x2.device)
    return apply_keep(x2, p, seed, out=buf[: x2.numel()].view(x2.shape))


class _LoraLinearFn(torch.autograd.Function):
    """``x W^T + b + s/(1-p) * (drop(x) A^T) B^T`` in ``dtype``, with hand-written backward.

    ``u = drop(x) A^T`` is kept unscaled; ``s/(1-p)`` goes into the products that read it.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, xc: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                lora_a: torch.Tensor, lora_b: torch.Tensor, scaling: float, p: float) -> torch.Tensor:
        dtype = xc.dtype
        x2 = xc.reshape(-1, xc.shape[-1]).contiguous()
        w, a, b = weight.to(dtype), lora_a.to(dtype), lora_b.to(dtype)
        out = torch.mm(x2, w.t()) if bias is None else torch.addmm(bias.to(dtype), x2, w.t())
        seed = draw_seed() if p > 0 else None
        u = torch.mm(x2 if seed is None else _dropped(x2, p, seed), a.t())
        out.addmm_(u, b.t(), alpha=scaling * keep_scale(p))
        ctx.save_for_backward(x2, u, w, a, b)
        ctx.scaling, ctx.p, ctx.seed, ctx.x_dtype, ctx.shape = scaling, p, seed, x.dtype, x.shape
        ctx.weight_dtypes = (weight.dtype, None if bias is None else bias.dtype, lora_a.dtype, lora_b.dtype)
        return out.view(*x.shape[:-1], w.shape[0])

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        x2, u, w, a, b = ctx.saved_tensors
        w_dtype, bias_dtype, a_dtype, b_dtype = ctx.weight_dtypes
        seed = ctx.seed
        g = grad_out.reshape(-1, grad_out.shape[-1]).to(x2.dtype)
        scale = ctx.scaling * keep_scale(ctx.p)  # the adapter's scaling and dropout's 1/(1-p), applied to u
        gu = torch.mm(g, b).mul_(scale)  # gradient of the rank-r product u
        # (u^T g)^T rather than g^T u: the same products, 20-35% faster in oneDNN for these shapes
        grad_b = torch.mm(u.t(), g).mul_(scale).t().to(b_dtype, memory_format=torch.contiguous_format)
        # The dropout mask is computed again from its seed rather than kept from the forward pass.
        grad_a = torch.mm(gu.t(), x2 if seed is None else _dropped(x2, ctx.p, seed)).to(a_dtype)
        grad_x = None
        if ctx.needs_input_grad[0]:
            gxd = torch.mm(gu, a)
            if seed is not None:
                apply_keep(gxd, ctx.p, seed, out=gxd)
            grad_x = torch.addmm(gxd, g, w).to(ctx.x_dtype).view(ctx.shape)
        grad_w = torch.mm(g.t(), x2).to(w_dtype) if ctx.needs_input_grad[2] else None
        grad_bias = g.sum(0).to(bias_dtype) if ctx.needs_input_grad[3] else None
        return grad_x, None, grad_w, grad_bias, grad_a, grad_b, None, None


def _dropout_p(module: nn.Module) -> float | None:
    """The dropout probability of a PEFT ``lora_dropout`` entry, or None for one this path does not know."""
    if isinstance(module, nn.Identity):
        return 0.0
    if isinstance(module, nn.Dropout):
        return module.p
    return None


def fused_adapter(module: LoraLinear) -> str | None:
    """The adapter the fused path would run for this layer now, or None where PEFT's forward must."""
    adapters = [name for name in module.active_adapters if name in module.lora_A]
    if module.disable_adapters or module.merged or len(adapters) != 1 or adapters[0] in module.lora_variant:
        return None
    name = adapters[0]
    if _dropout_p(module.lora_dropout[name]) is None or module.lora_A[name].bias is not None \
            or module.lora_B[name].bias is not None:
        return None
    return name


def _fused_forward(self: LoraLinear, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """The fused path where it applies, else PEFT's own ``forward``."""
    name = None if args or kwargs else fused_adapter(self)
    if name is None:
        return LoraLinear.forward(self, x, *args, **kwargs)
    dropout = self.lora_dropout[name]
    p = _dropout_p(dropout) if dropout.training else 0.0
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
    base = self.base_layer
    with torch.autocast(device, enabled=False):
        return _LoraLinearFn.apply(x, cast_once(x, dtype), base.weight, base.bias, self.lora_A[name].weight,
                                   self.lora_B[name].weight, self.scaling[name], p)


def fusable(module: nn.Module) -> bool:
    """Whether ``module`` is a PEFT LoRA linear layer on a plain ``nn.Linear`` base."""
    return (isinstance(module, LoraLinear) and type(module.base_layer) is nn.Linear
            and not getattr(module, "fan_in_fan_out", False))


def use_fused_lora(model: nn.Module) -> int:
    """Route every fusable LoRA layer of ``model`` through the fused function; returns how many it serves now.

    Each layer still falls back to PEFT's forward whenever the fused path does not apply
    (merged, disabled, several adapters, a variant such as DoRA), so this is safe to call on any
    PEFT model.
    """
    count = 0
    for module in model.modules():
        if fusable(module):
            if "forward" not in vars(module):
                set_forward(module, types.MethodType(_fused_forward, module))
            count += fused_adapter(module) is not None  # a DoRA layer is routed but served by PEFT
    return count
