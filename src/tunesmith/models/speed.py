"""The fast training path: what tunesmith changes on a loaded model before it trains, and why.

Each part keeps the arithmetic of the plain recipe (transformers + PEFT under bf16 autocast) and
removes work or memory around it; ``bench/train_speed.py`` measures the whole, and the README
lists what each part bought.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import torch
from torch import nn

from tunesmith.models.adapters import prompt_learning
from tunesmith.models.fast_attention import use_fast_attention
from tunesmith.models.fast_mlp import use_fast_mlp
from tunesmith.models.fast_norm import use_fast_norm
from tunesmith.models.fast_rotary import use_fast_rotary
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


PARTS = ("fused_lora", "fast_attention", "packing", "prefix_sharing", "bf16_weights", "swiglu", "rms_norm", "rotary",
         "shape_buckets")

#: Packed rows are rounded up to a multiple of this many tokens, padded batches' widths to
#: :data:`PADDED_MULTIPLE` (each row of a padded batch pays its padding, so the step is smaller).
PACKED_MULTIPLE = 32
PADDED_MULTIPLE = 8


def speed_up(lm: LoadedModel, skip: Collection[str] = ()) -> dict[str, Any]:
    """Put ``lm.model`` on the fast training path; returns what was applied, for the run's log.

    - ``fused_lora``: fused LoRA layers (:mod:`tunesmith.models.fused_lora`);
    - ``fast_attention``: causal attention for short sequences on the CPU
      (:mod:`tunesmith.models.fast_attention`);
    - ``packing``: training batches packed into one row without padding (needs the fast attention,
      which keeps the examples apart; not for prompt learning, whose virtual tokens go in every row);
    - ``prefix_sharing``: in a packed row, the tokens that open every example of the batch (a system
      prompt, an instruction) are computed once and attended by each example
      (:func:`~tunesmith.train.batching.collate_packed`; needs packing);
    - ``bf16_weights``: with bf16 autocast, the frozen weights of fused LoRA layers stored in bf16
      (:func:`store_frozen_weights`);
    - ``swiglu``: gated MLPs keep two of their three activations and recompute the third
      (:mod:`tunesmith.models.fast_mlp`);
    - ``rms_norm``: Llama-style RMSNorm layers with a frozen weight run as one C kernel each way
      (:mod:`tunesmith.models.fast_norm`);
    - ``rotary``: the rotary position embedding of training steps runs as one C kernel each way
      and hands bf16 to the attention (:mod:`tunesmith.models.fast_rotary`);
    - ``shape_buckets``: training batches are padded to a few lengths (``shape_multiple`` in the
      result: :data:`PACKED_MULTIPLE` tokens for packed rows, :data:`PADDED_MULTIPLE` for padded
      batches), because every new matrix shape leaves compiled code behind
      (:func:`~tunesmith.train.batching.collate_packed`).

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
    packing = attention and "packing" not in skip and not prompt_learning(lm.model)
    applied: dict[str, Any] = {"fused_lora_layers": fused, "fast_attention": attention, "packing": packing,
                               "prefix_sharing": packing and "prefix_sharing" not in skip,
                               "frozen_weights_in_bf16": 0,
                               "swiglu_mlps": use_fast_mlp(base) if "swiglu" not in skip else 0,
                               "rms_norms": use_fast_norm(base) if "rms_norm" not in skip else 0,
                               "rotary_attention": use_fast_rotary(base) if "rotary" not in skip else 0,
                               "shape_multiple": 1,
                               "native_kernels": library() is not None}
    if "shape_buckets" not in skip:
        applied["shape_multiple"] = PACKED_MULTIPLE if packing else PADDED_MULTIPLE
    if lm.autocast_dtype is not None and fused and "bf16_weights" not in skip:
        applied["frozen_weights_in_bf16"] = store_frozen_weights(lm.model, lm.autocast_dtype)
    return applied
