"""Routing modules of a loaded model to the fast path's code, recognising code by its bytecode, and undoing it."""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Iterator
from typing import Any

from torch import nn

#: Set on every module whose ``forward`` the fast path replaced, so :func:`unroute` finds exactly those.
ROUTED = "_tunesmith_routed"


def same_code(fn: Any, reference: Callable[..., Any]) -> bool:
    """Whether ``fn`` is a Python function with ``reference``'s bytecode and names, each under its decorators.

    Architectures that copy Llama's code (Mistral, Qwen2 and others) pass; a changed function does
    not, and keeps its own code. Decorators that wrap a function with ``functools.wraps`` (such as
    transformers' ``deprecate_kwarg``) are looked through on both sides, so that two different
    functions under the same decorator are not taken for the same code.
    """
    fn, reference = unwrapped(fn), unwrapped(reference)
    code, ref = getattr(fn, "__code__", None), getattr(reference, "__code__", None)
    return code is not None and ref is not None and code.co_code == ref.co_code and code.co_names == ref.co_names


def unwrapped(fn: Any) -> Any:
    """``fn`` without the ``functools.wraps`` decorators around it (``fn`` itself where there are none)."""
    return inspect.unwrap(fn) if callable(fn) and hasattr(fn, "__wrapped__") else fn


def hub_function(fn: Any) -> Any:
    """The plain Python function behind a transformers 5 hub-kernel wrapper, or ``fn`` itself.

    transformers 5 (with the ``kernels`` package) turns functions such as ``apply_rotary_pos_emb``
    into modules (``@use_kernel_forward_from_hub``) whose ``forward`` calls the original function;
    it is recognised by its code like any other.
    """
    if isinstance(fn, nn.Module) and hasattr(type(fn), "kernel_layer_name"):
        return inspect.getclosurevars(type(fn).forward).nonlocals.get("func", fn)
    return fn


def set_forward(module: nn.Module, forward: Callable[..., Any]) -> None:
    """Give ``module`` its own ``forward`` (an instance attribute) and mark it for :func:`unroute`."""
    module.forward = forward
    module.__dict__[ROUTED] = True


def route(model: nn.Module, qualifies: Callable[[nn.Module], bool],
          forward_for: Callable[[nn.Module], Callable[..., Any]]) -> int:
    """Give each module of ``model`` that ``qualifies`` the forward ``forward_for(module)``; returns how many qualify.

    A module that already has a forward of its own (routed before) keeps it, so calling this again
    changes nothing and returns the same count.
    """
    count = 0
    for module in model.modules():
        if qualifies(module):
            if "forward" not in vars(module):
                set_forward(module, types.MethodType(forward_for(module), module))
            count += 1
    return count


def _with_private_functions(model: nn.Module) -> Iterator[nn.Module]:
    """Every module of ``model``, and the per-instance function wrappers transformers 5 keeps in ``_kernel_funcs``."""
    for module in model.modules():
        yield module
        yield from (vars(module).get("_kernel_funcs") or {}).values()


def unroute(model: nn.Module) -> int:
    """Give every module that :func:`set_forward` changed its class's forward back; returns how many."""
    count = 0
    for module in _with_private_functions(model):
        if vars(module).pop(ROUTED, False):
            vars(module).pop("forward", None)
            count += 1
    return count
