"""The fast training path: what tunesmith changes on a loaded model while it trains, and undoes after.

Each part keeps the arithmetic of the plain recipe (transformers + PEFT under bf16 autocast) and
removes work or memory around it; ``bench/train_speed.py`` measures the whole, and
``docs/fast-path.md`` lists what each part bought. :func:`fast_path` applies the parts a project
asks for (``train.fast_path``), says which applied and warns about any that should have applied
to this model but did not, and gives the model back as transformers and PEFT define it when
training ends, so evaluation, export and serving never run the fast path's code.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, get_args

import torch
import transformers
from torch import nn

from tunesmith.config import FastPathPart
from tunesmith.fastpath.attention import NAME as FAST_ATTENTION
from tunesmith.fastpath.attention import use_fast_attention
from tunesmith.fastpath.dropout import use_fast_dropout, use_plain_dropout
from tunesmith.fastpath.lora import clear_scratch, fusable, fused_adapter, use_fused_lora
from tunesmith.fastpath.mlp import use_fast_mlp
from tunesmith.fastpath.native import library, unavailable_reason
from tunesmith.fastpath.norm import use_fast_norm
from tunesmith.fastpath.rotary import rotary_modules, use_fast_rotary
from tunesmith.fastpath.routing import unroute
from tunesmith.models.adapters import prompt_learning
from tunesmith.models.load import LoadedModel
from tunesmith.models.precision import cast_once, forget_casts


def store_frozen_weights(model: nn.Module, dtype: torch.dtype,
                         changed: list[tuple[nn.Module, torch.dtype]] | None = None) -> int:
    """Keep the frozen base weights of fused LoRA layers in ``dtype``; returns how many layers changed.

    Each changed base layer and its former dtype is added to ``changed`` (for :func:`fast_path` to undo).

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
            if changed is not None:
                changed.append((base, base.weight.dtype))
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


PARTS: tuple[str, ...] = get_args(FastPathPart)

#: Packed rows are rounded up to a multiple of this many tokens, padded batches' widths to
#: :data:`PADDED_MULTIPLE` (each row of a padded batch pays its padding, so the step is smaller).
PACKED_MULTIPLE = 32
PADDED_MULTIPLE = 8


@dataclass
class FastPathReport:
    """What :func:`fast_path` applied to a model, for the run's record (``train.fast_path`` in ``report.json``)."""

    fused_lora_layers: int = 0
    """LoRA layers served by the fused function."""
    seeded_dropout: int = 0
    """Adapter dropout modules using seeded masks."""
    fast_attention: bool = False
    """Causal attention for short sequences on the CPU in use."""
    packing: bool = False
    """Training batches packed into one row without padding."""
    prefix_sharing: bool = False
    """A batch's common opening tokens computed once in the packed row."""
    frozen_weights_in_bf16: int = 0
    """Base layers whose frozen weights were stored in bf16 for training."""
    swiglu_mlps: int = 0
    """Gated MLPs keeping two of their three activations."""
    rms_norms: int = 0
    """RMSNorm layers run by the C kernels."""
    rotary_attention: int = 0
    """Attention modules whose rotary embedding runs by the C kernels."""
    shape_multiple: int = 1
    """Training batches are padded to a multiple of this many tokens."""
    native_kernels: bool = False
    """tunesmith's C kernels were built and loaded."""
    warnings: list[str] = field(default_factory=list)
    """Parts that should have applied to this model and hardware but did not, each with the reason."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def wanted_parts(setting: str | Collection[str]) -> set[str]:
    """The parts ``train.fast_path`` asks for: ``auto`` all, ``off`` none, or the list given.

    Raises:
        ValueError: The list names an unknown part.
    """
    if setting == "auto":
        return set(PARTS)
    if setting == "off":
        return set()
    unknown = set(setting) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown parts of the fast path: {sorted(unknown)}; known: {', '.join(PARTS)}")
    return set(setting)


def _llama_like_counts(model: nn.Module) -> dict[str, int]:
    """How many modules of each kind the Llama-family parts should serve (by structure, not by code)."""
    mlps = norms = 0
    for module in model.modules():
        if all(hasattr(module, name) for name in ("gate_proj", "up_proj", "down_proj")):
            mlps += 1
        if type(module).__name__.endswith("RMSNorm") and hasattr(module, "variance_epsilon"):
            weight = getattr(module, "weight", None)
            norms += isinstance(weight, torch.Tensor) and not weight.requires_grad
    return {"swiglu": mlps, "rms_norm": norms, "rotary": rotary_modules(model)}


def _shortfalls(report: FastPathReport, wanted: set[str], lm: LoadedModel, expected: dict[str, int],
                attention_before: str | None) -> list[str]:
    """The parts asked for that should have applied to this model and hardware but did not, with reasons."""
    out: list[str] = []
    version = f"transformers {transformers.__version__}"
    served = {"swiglu": report.swiglu_mlps, "rms_norm": report.rms_norms, "rotary": report.rotary_attention}
    what = {"swiglu": "gated MLPs", "rms_norm": "RMSNorm layers", "rotary": "rotary attention modules"}
    for part, count in served.items():
        if part in wanted and count < expected[part]:
            out.append(f"{part}: {count} of {expected[part]} {what[part]} recognised ({version} defines them in "
                       "code the fast path does not know); they run as transformers defines them, more slowly")
    on_cpu = lm.device.type == "cpu"
    if on_cpu and "fast_attention" in wanted and not report.fast_attention:
        out.append(f"fast_attention: the model uses attention '{attention_before}', not 'sdpa'; "
                   "training keeps it (and batches are not packed)")
    if on_cpu and wanted & {"seeded_dropout", "fast_attention", "swiglu", "rms_norm", "rotary"} \
            and not report.native_kernels:
        out.append(f"native kernels: {unavailable_reason()}; PyTorch operators compute the same results more slowly")
    return out


@contextmanager
def fast_path(lm: LoadedModel, parts: str | Collection[str] = "auto") -> Iterator[FastPathReport]:
    """Put ``lm.model`` on the fast training path for the duration of the block, then give it back.

    - ``fused_lora``: fused LoRA layers (:mod:`tunesmith.fastpath.lora`);
    - ``seeded_dropout``: adapter dropout by seeded masks (:mod:`tunesmith.fastpath.dropout`);
    - ``fast_attention``: causal attention for short sequences on the CPU
      (:mod:`tunesmith.fastpath.attention`);
    - ``packing``: training batches packed into one row without padding (needs the fast attention,
      which keeps the examples apart; not for prompt learning, whose virtual tokens go in every row);
    - ``prefix_sharing``: in a packed row, the tokens that open every example of the batch (a system
      prompt, an instruction) are computed once and attended by each example
      (:func:`~tunesmith.train.batching.collate_packed`; needs packing);
    - ``bf16_weights``: with bf16 autocast, the frozen weights of fused LoRA layers stored in bf16
      (:func:`store_frozen_weights`);
    - ``swiglu``: gated MLPs keep two of their three activations and recompute the third
      (:mod:`tunesmith.fastpath.mlp`);
    - ``rms_norm``: Llama-style RMSNorm layers with a frozen weight run as one C kernel each way
      (:mod:`tunesmith.fastpath.norm`);
    - ``rotary``: the rotary position embedding of training steps runs as one C kernel each way
      and hands bf16 to the attention (:mod:`tunesmith.fastpath.rotary`);
    - ``shape_buckets``: training batches are padded to a few lengths (``shape_multiple``:
      :data:`PACKED_MULTIPLE` tokens for packed rows, :data:`PADDED_MULTIPLE` for padded batches),
      because every new matrix shape leaves compiled code behind
      (:func:`~tunesmith.train.batching.collate_packed`).

    Methods the parts do not cover (DoRA, prompt learning, QLoRA's 4-bit layers) keep their own code.
    A part asked for that should serve this model but does not (a Llama-like model whose modules
    are not recognised, kernels that did not build) is named in the report's ``warnings`` and in a
    Python warning. On leaving the block every module gets its class's forward back, the attention
    its former implementation, frozen weights their former dtype (their values stay rounded to bf16,
    as autocast rounds them at every product anyway), dropout modules their plain class, and the
    caches the parts kept are emptied.

    Args:
        lm: The loaded model, with its training method applied.
        parts: ``auto`` (every part), ``off`` (none), or the names of the parts to apply.

    Yields:
        What was applied.

    Raises:
        ValueError: ``parts`` names an unknown part.
    """
    wanted = wanted_parts(parts)
    base = lm.model.get_base_model() if hasattr(lm.model, "get_base_model") else lm.model
    expected = _llama_like_counts(base)
    config = getattr(base, "config", None)
    attention_before = getattr(config, "_attn_implementation", None)
    stored: list[tuple[nn.Module, torch.dtype]] = []
    report = FastPathReport(native_kernels=library() is not None)
    try:
        report.fused_lora_layers = use_fused_lora(lm.model) if "fused_lora" in wanted else 0
        report.seeded_dropout = use_fast_dropout(lm.model) if "seeded_dropout" in wanted else 0
        report.fast_attention = use_fast_attention(base) if "fast_attention" in wanted else False
        report.packing = report.fast_attention and "packing" in wanted and not prompt_learning(lm.model)
        report.prefix_sharing = report.packing and "prefix_sharing" in wanted
        report.swiglu_mlps = use_fast_mlp(base) if "swiglu" in wanted else 0
        report.rms_norms = use_fast_norm(base) if "rms_norm" in wanted else 0
        report.rotary_attention = use_fast_rotary(base) if "rotary" in wanted else 0
        if "shape_buckets" in wanted:
            report.shape_multiple = PACKED_MULTIPLE if report.packing else PADDED_MULTIPLE
        if lm.autocast_dtype is not None and report.fused_lora_layers and "bf16_weights" in wanted:
            report.frozen_weights_in_bf16 = store_frozen_weights(lm.model, lm.autocast_dtype, stored)
        report.warnings = _shortfalls(report, wanted, lm, expected, attention_before)
        for text in report.warnings:
            warnings.warn(f"fast path: {text}", stacklevel=3)
        yield report
    finally:
        unroute(lm.model)
        use_plain_dropout(lm.model)
        if report.fast_attention and attention_before not in (None, FAST_ATTENTION):
            base.set_attn_implementation(attention_before)
        with torch.no_grad():
            for layer, dtype in stored:
                layer.weight.data = layer.weight.data.to(dtype)
                if layer.bias is not None:
                    layer.bias.data = layer.bias.data.to(dtype)
        forget_casts()
        clear_scratch()
