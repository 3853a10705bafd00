"""Every row of a batch with its own LoRA adapter, at the cost of one: the adapters' matrices stacked per layer.

PEFT's per-row ``adapter_names`` regroups the rows in every LoRA layer and runs each adapter's
matrices on its group: a batch mixing four adapters makes four times the small products and
Python work of one (measured: a 32-row decoding step on the embedded model, 90 ms with one active
adapter, 120 ms with one adapter named per row, 144 ms with two). Here each LoRA layer keeps its
adapters' A and B stacked (ranks padded with zeros, the scaling folded into B, row 0 all zeros for
the untuned base), and a batch gathers each row's pair and computes all rows' updates with two
batched products, whatever the mix (the punica/S-LoRA way, in plain PyTorch). Exact up to the
order of float additions; the engine's tests compare every row with its adapter alone.
"""

from __future__ import annotations

import threading
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from peft.tuners.lora.layer import Linear as LoraLinear

_rows = threading.local()


def _forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    index = getattr(_rows, "index", None)
    stacks = getattr(self, "_tunesmith_stacks", None)
    if index is None or stacks is None or kwargs.get("adapter_names") is not None:
        return self._tunesmith_peft_forward(x, *args, **kwargs)
    result = self.base_layer(x, *args, **kwargs)
    if not _rows.adapted:  # every row is the untuned base
        return result
    a, b = stacks
    shape = x.shape
    flat = x.reshape(shape[0], -1, shape[-1]).to(a.dtype)  # rows, tokens, in
    update = torch.bmm(torch.bmm(flat, a[index].transpose(1, 2)), b[index].transpose(1, 2))  # rows, tokens, out
    return result + update.reshape(*shape[:-1], -1).to(result.dtype)


class MultiLora:
    """Stacked LoRA matrices for a PEFT model's LoRA layers; :meth:`rows` makes a forward pass use them per row.

    Args:
        model: A PEFT model with LoRA adapters (plain LoRA; DoRA and other variants are not stacked).
        dtype: The stacks' dtype (bf16 under bf16 autocast).
    """

    def __init__(self, model: Any, dtype: torch.dtype = torch.float32):
        self.model, self.dtype = model, dtype
        self.names: list[str] = []

    def rebuild(self, names: Sequence[str]) -> None:
        """Stack the adapters ``names`` (index i+1 is ``names[i]``; 0 is the base) in every LoRA layer."""
        self.names = list(names)
        with torch.no_grad():
            for module in self.model.modules():
                if not isinstance(module, LoraLinear):
                    continue
                if not hasattr(module, "_tunesmith_peft_forward"):
                    module._tunesmith_peft_forward = module.forward
                    module.forward = types.MethodType(_forward, module)
                present = [n for n in self.names if n in module.lora_A]
                rank = max([module.lora_A[n].weight.shape[0] for n in present], default=1)
                out_f, in_f = module.base_layer.weight.shape
                a = torch.zeros(len(self.names) + 1, rank, in_f, dtype=self.dtype)
                b = torch.zeros(len(self.names) + 1, out_f, rank, dtype=self.dtype)
                for i, name in enumerate(self.names, start=1):
                    if name in module.lora_A:
                        wa, wb = module.lora_A[name].weight, module.lora_B[name].weight
                        a[i, : wa.shape[0]] = wa.to(self.dtype)
                        b[i, :, : wb.shape[1]] = (wb.float() * module.scaling[name]).to(self.dtype)
                module._tunesmith_stacks = (a, b)

    def index(self, adapters: Sequence[str | None]) -> torch.Tensor:
        """Each row's stack index (None, or a name not stacked: the base)."""
        where = {n: i for i, n in enumerate(self.names, start=1)}
        return torch.tensor([where.get(a, 0) if a is not None else 0 for a in adapters], dtype=torch.long)

    @contextmanager
    def rows(self, adapters: Sequence[str | None]) -> Iterator[None]:
        """Within the block, this thread's forward passes give row i the adapter ``adapters[i]``."""
        _rows.index = self.index(adapters)
        _rows.adapted = bool(_rows.index.any())
        try:
            yield
        finally:
            _rows.index = None
