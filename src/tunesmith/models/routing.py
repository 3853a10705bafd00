"""Routing modules of a loaded model to the fast path's code, and recognising code by its bytecode."""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from torch import nn


def same_code(fn: Any, reference: Callable[..., Any]) -> bool:
    """Whether ``fn`` is a Python function with ``reference``'s bytecode and names.

    Architectures that copy Llama's code (Mistral, Qwen2 and others) pass; anything else, a
    wrapped or changed function included, does not, and keeps its own code.
    """
    code, ref = getattr(fn, "__code__", None), reference.__code__
    return code is not None and code.co_code == ref.co_code and code.co_names == ref.co_names


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
                module.forward = types.MethodType(forward_for(module), module)
            count += 1
    return count
