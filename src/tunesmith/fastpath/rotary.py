"""Rotary position embedding for training under bf16 autocast on the CPU, one C kernel each way.

Llama's ``apply_rotary_pos_emb`` multiplies bf16 queries and keys by fp32 cosines and sines, so
it makes fp32 copies of both (twice the bytes), in five operators over a strided layout, and the
attention casts them back to bf16 right after; backward is as many operators again. Here one pass
of a C kernel (:mod:`tunesmith.fastpath.native`) computes the same fp32 arithmetic and writes bf16
in the layout the linear layer produced, and one pass computes the gradient. The result is the
reference's rounded to bf16, which is what any attention under bf16 autocast reads (the kernel
may fuse a product and a sum, so a value can differ from the reference's in its last bf16 bit).

It serves training only (gradients on, bf16 autocast, bf16 queries and keys, fp32 tables, the
CPU): evaluation and generation keep the reference function, so their caches keep its dtype.
On transformers 5 each attention module's private wrapper of ``apply_rotary_pos_emb`` (its
hub-kernel plug-in point) is given the kernels; on transformers 4 the module's own ``forward``
code runs in a namespace in which ``apply_rotary_pos_emb`` is :func:`rotary`. Architectures that
copy Llama's function qualify.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers.models.llama import modeling_llama

from tunesmith.fastpath.native import library
from tunesmith.fastpath.routing import hub_function, route, same_code, set_forward, unwrapped

# Llama's own function (transformers 5 wraps it in a hub-kernel module; the function is inside).
_REFERENCE = hub_function(modeling_llama.apply_rotary_pos_emb)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, backward: bool) -> torch.Tensor:
    """The kernel on ``x`` ``[B, H, T, D]`` with ``cos``/``sin`` ``[B, T, D]``; bf16 out, token-major memory."""
    batch, heads, length, dim = x.shape
    rows = x.transpose(1, 2).contiguous()  # a view where the linear layer's output is token-major already
    out = torch.empty_like(rows)
    library().tunesmith_rotary_bf16(rows.data_ptr(), cos.data_ptr(), sin.data_ptr(), out.data_ptr(),
                                    batch * length, heads, dim, int(backward))
    return out.transpose(1, 2)


class _Rotary(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(cos, sin)
        return _rotate(x, cos, sin, backward=False)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        cos, sin = ctx.saved_tensors
        # autograd hands the gradient in the output's dtype: bf16
        return _rotate(grad, cos, sin, backward=True), None, None


def _served(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, unsqueeze_dim: int) -> bool:
    return (unsqueeze_dim == 1 and torch.is_grad_enabled() and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16 and q.device.type == "cpu"
            and q.dtype == k.dtype == torch.bfloat16 and cos.dtype == sin.dtype == torch.float32
            and q.dim() == k.dim() == 4 and cos.dim() == 3 and cos.shape == sin.shape
            and q.shape[-1] == cos.shape[-1] and q.shape[-1] % 2 == 0
            and cos.shape[0] in (1, q.shape[0]) and cos.shape[1] == q.shape[2]
            and k.shape[0] == q.shape[0] and k.shape[2] == q.shape[2]
            and library() is not None)


def rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
           unsqueeze_dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``apply_rotary_pos_emb`` with its signature: the kernels where they serve, else the reference."""
    if not _served(q, k, cos, sin, unsqueeze_dim):
        return _REFERENCE(q, k, cos, sin, unsqueeze_dim)
    return _kernel_pair(q, k, cos, sin)


def _kernel_pair(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
                 sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    batch = q.shape[0]  # tables made for one row serve every row of a padded batch
    cos, sin = (t.expand(batch, *t.shape[1:]).contiguous() for t in (cos, sin))
    return _Rotary.apply(q, cos, sin), _Rotary.apply(k, cos, sin)


@functools.cache
def _routed(forward: Callable[..., Any]) -> Callable[..., Any]:
    """``forward`` with its module's namespace, but :func:`rotary` as ``apply_rotary_pos_emb``."""
    namespace = {**forward.__globals__, "apply_rotary_pos_emb": rotary}
    routed = types.FunctionType(forward.__code__, namespace, forward.__name__, forward.__defaults__,
                                forward.__closure__)
    routed.__kwdefaults__ = forward.__kwdefaults__
    return routed


def _calls_llamas_rotary(module: nn.Module) -> bool:
    """transformers 4 (and 5 without ``kernels``): the class's forward, under its decorators, calls a plain copy of
    Llama's function, and the module has no private wrapper of it (see :func:`_private_rotary`)."""
    forward = unwrapped(getattr(type(module), "forward", None))
    code = getattr(forward, "__code__", None)
    return (code is not None and "apply_rotary_pos_emb" in code.co_names and _private_rotary(module) is None
            and same_code(hub_function(forward.__globals__.get("apply_rotary_pos_emb")), _REFERENCE))


def _private_rotary(module: nn.Module) -> nn.Module | None:
    """transformers 5 with ``kernels``: the module's own wrapper of a copy of Llama's function, or None.

    ``@use_kernelized_func(apply_rotary_pos_emb)`` gives each attention module a private instance
    of the function's hub-kernel module (in ``_kernel_funcs``), and the module-level function
    dispatches to it while that attention runs: the plug-in point meant for replacing it.
    """
    for private in (vars(module).get("_kernel_funcs") or {}).values():
        if same_code(hub_function(private), _REFERENCE):
            return private
    return None


def _use_private(private: nn.Module) -> None:
    """Route one private wrapper to :func:`rotary`, falling back to its own forward (the reference)."""
    if "forward" in vars(private):
        return
    reference = private.forward  # the class's forward, bound: calls the plain function

    def forward(self: nn.Module, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                unsqueeze_dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        if not _served(q, k, cos, sin, unsqueeze_dim):
            return reference(q, k, cos, sin, unsqueeze_dim)
        return _kernel_pair(q, k, cos, sin)

    # A bound method, as kernels expects of a wrapper's forward (it reads ``forward.__func__``).
    set_forward(private, types.MethodType(forward, private))


def rotary_modules(model: nn.Module) -> int:
    """How many attention modules of a model with rotary position embeddings there are, by structure alone.

    What the ``rotary`` part should serve, counted without recognising any code, so that a module
    whose code is not recognised (a new transformers release) shows as a shortfall, not as nothing
    to do: modules with q, k, v and o projections, in a model that has a rotary embedding module.
    """
    modules = list(model.modules())
    if not any(type(m).__name__.endswith("RotaryEmbedding") for m in modules):
        return 0
    return sum(1 for m in modules if all(hasattr(m, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj")))


def use_fast_rotary(model: nn.Module) -> int:
    """Route the attention modules of ``model`` that call Llama's rotary function to :func:`rotary`; returns how many.

    On transformers 5 (with ``kernels``) each module's private function wrapper gets the kernels;
    on transformers 4 the module's own forward code runs in a namespace where the name is
    :func:`rotary`. Calling it again changes nothing and returns the same count.
    """
    count = 0
    for module in model.modules():
        private = _private_rotary(module)
        if private is not None:
            _use_private(private)
            count += 1
    # The undecorated forward runs routed: the decorators transformers 4 puts around it (deprecate_kwarg) only
    # rename arguments that callers outside the model might still pass.
    return count + route(model, _calls_llamas_rotary, lambda module: _routed(unwrapped(type(module).forward)))
