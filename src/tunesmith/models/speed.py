"""The fast training path: what tunesmith changes on a loaded model before it trains, and why.

Each part keeps the arithmetic of the plain recipe (transformers + PEFT under bf16 autocast) and
removes work or memory around it; ``bench/train_speed.py`` measures the whole, and the README
lists what each part bought.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Collection
from typing import Any

import torch
from torch import nn

from tunesmith.models.adapters import prompt_learning
from tunesmith.models.fast_attention import use_fast_attention
from tunesmith.models.fast_mlp import use_fast_mlp
from tunesmith.models.fused_lora import fusable, fused_adapter, use_fused_lora
from tunesmith.models.load import LoadedModel
from tunesmith.models.native import library
from tunesmith.models.precision import cast_once


def store_frozen_weights(model: nn.Module, dtype: torch.dtype) -> int:
    """Keep the frozen base weights of fused LoRA layers in ``dtype``; returns how many layers changed.

    Autocast casts every frozen fp32 weight to bf16 at every forward pass and keeps that copy for
    the backward pass: for the embedded model, 270 MB made and kept each step. Storing the weight
    in bf16 once gives the very same products (autocast's cast and this one round alike) with
    half the weight memory and no per-step copies. Only the base layers of fused LoRA layers are
    changed, because their forward accepts any input dtype: outside autocast they compute in the
    input's dtype from the bf16-rounded weights instead of failing. Weights shared with an
    embedding (a tied output head) stay as they are, so the residual stream keeps its precision.
    """
    tied = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    count = 0
    for module in model.modules():
        if not fusable(module) or fused_adapter(module) is None:
            continue
        base = module.base_layer
        if base.weight.requires_grad or id(base.weight) in tied or (base.bias is not None and base.bias.requires_grad):
            continue
        if base.weight.dtype != dtype:
            base.weight.data = base.weight.data.to(dtype)
            if base.bias is not None:
                base.bias.data = base.bias.data.to(dtype)
            count += 1
    if count:
        # The loader maps the checkpoint file and the casts above read all of it: its pages stay
        # resident (the fp32 weights again, 540 MB for the embedded model) for as long as any tensor
        # still points into the mapping. Private copies of the frozen rest let it be unmapped.
        for tensor in [*model.parameters(), *model.buffers()]:
            if not tensor.requires_grad and tensor.dtype != dtype:
                tensor.data = tensor.data.clone()
    return count


def frozen_cast(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``weight`` in ``dtype``: a trainable one cast as autograd sees it, a frozen one cast once (:func:`cast_once`).

    For a frozen weight that must stay in full precision elsewhere, such as an output head tied to
    the input embedding, which autocast would otherwise cast anew at every step.
    """
    return weight.to(dtype) if weight.requires_grad else cast_once(weight, dtype)


@functools.cache
def _malloc_trim() -> ctypes._CFuncPtr | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc; other C libraries return memory their own way
    except (OSError, AttributeError):
        return None


def trim_heap() -> bool:
    """Give the memory freed by the last training step back to the system; returns whether it could.

    Each step frees hundreds of megabytes of activations, and glibc's allocator keeps most of it
    in its heaps, scattered among live blocks; over steps of varying lengths the process grows to
    well above what any one step needs. Trimming after each step kept the embedded model's peak
    about 240 MB lower (1.93 against 2.16-2.20 GiB, 16 steps back to back) and cost 1-23% of the
    speed in those runs: the next step faults the returned pages in again. It is the part of the
    fast path that trades time for memory.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


PARTS = ("fused_lora", "fast_attention", "packing", "bf16_weights", "swiglu", "trim_heap")


def speed_up(lm: LoadedModel, skip: Collection[str] = ()) -> dict[str, Any]:
    """Put ``lm.model`` on the fast training path; returns what was applied, for the run's log.

    - ``fused_lora``: fused LoRA layers (:mod:`tunesmith.models.fused_lora`);
    - ``fast_attention``: causal attention for short sequences on the CPU
      (:mod:`tunesmith.models.fast_attention`);
    - ``packing``: training batches packed into one row without padding (needs the fast attention,
      which keeps the examples apart; not for prompt learning, whose virtual tokens go in every row);
    - ``bf16_weights``: with bf16 autocast, the frozen weights of fused LoRA layers stored in bf16
      (:func:`store_frozen_weights`);
    - ``swiglu``: gated MLPs keep two of their three activations and recompute the third
      (:mod:`tunesmith.models.fast_mlp`);
    - ``trim_heap``: the training loop returns freed memory to the system after every step
      (:func:`trim_heap`).

    Methods the parts do not cover (DoRA, prompt learning, QLoRA's 4-bit layers) keep their own code.

    Args:
        lm: The loaded model, with its training method applied.
        skip: Parts to leave out (the benchmark measures what each one buys this way).

    Raises:
        ValueError: ``skip`` names an unknown part.
    """
    unknown = set(skip) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown parts of the fast path: {sorted(unknown)}; known: {', '.join(PARTS)}")
    base = lm.model.get_base_model() if hasattr(lm.model, "get_base_model") else lm.model
    fused = use_fused_lora(lm.model) if "fused_lora" not in skip else 0
    attention = use_fast_attention(base) if "fast_attention" not in skip else False
    applied: dict[str, Any] = {"fused_lora_layers": fused, "fast_attention": attention,
                               "packing": attention and "packing" not in skip and not prompt_learning(lm.model),
                               "frozen_weights_in_bf16": 0,
                               "swiglu_mlps": use_fast_mlp(base) if "swiglu" not in skip else 0,
                               "trim_heap": "trim_heap" not in skip and _malloc_trim() is not None,
                               "native_kernels": library() is not None}
    if lm.autocast_dtype is not None and fused and "bf16_weights" not in skip:
        applied["frozen_weights_in_bf16"] = store_frozen_weights(lm.model, lm.autocast_dtype)
    return applied
