"""What training costs, counted without training: parameters, activation memory, FLOPs and operations of a step.

The model and its adapter are built on PyTorch's meta device (``accelerate.init_empty_weights``),
so nothing is allocated whatever the model's size, and the counts come from PEFT's real modules
rather than from formulas that drift from them. A forward and backward pass on meta tensors then
records what autograd keeps for the backward pass, the FLOPs (PyTorch's ``FlopCounterMode``) and
the operations launched; a second forward at another width separates what grows with width.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import init_empty_weights
from peft import PeftModel
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoConfig, AutoModelForCausalLM

from tunesmith.config import AdapterConfig
from tunesmith.errors import ModelError
from tunesmith.models.adapters import BuildContext, apply_adapter, get_method

#: Rows and the two widths the meta forward passes use; small, since meta tensors cost nothing but shapes.
_PROBE_ROWS, _PROBE_WIDTHS = 2, (32, 64)


@dataclass(frozen=True)
class ParamCounts:
    """Parameters of the model with its adapter, each shared tensor counted once.

    Attributes:
        total: Every parameter, the adapter's included.
        trainable: Those the optimiser updates.
        frozen_linear: Frozen weights of linear layers other than the output head (what 4-bit QLoRA quantises).
    """

    total: int
    trainable: int
    frozen_linear: int


@dataclass(frozen=True)
class StepCost:
    """Memory autograd keeps and FLOPs of one micro-batch, as per-token rates plus a part that grows with width.

    For ``rows`` sequences padded to ``width`` tokens, a quantity is ``rows * width * (a + b * width)``.

    Attributes:
        saved: (a, b) of the bytes kept for the backward pass (activations, not weights).
        flops: (a, b) of the floating-point operations of forward and backward together.
        forward_flops: (a, b) of the forward pass alone (validation).
        operations: Operations launched by one training micro-batch, whatever its size (per-operation overhead).
        forward_operations: Those of a forward pass alone.
        whole_logits: The loss needs logits at every position (prompt learning runs PEFT's full forward).
        checkpointing: Gradient checkpointing is on (activations are recomputed in the backward pass).
    """

    saved: tuple[float, float]
    flops: tuple[float, float]
    forward_flops: tuple[float, float]
    operations: int
    forward_operations: int
    whole_logits: bool
    checkpointing: bool

    @staticmethod
    def _at(coef: tuple[float, float], rows: int, width: int) -> float:
        return rows * width * (coef[0] + coef[1] * width)

    def saved_bytes(self, rows: int, width: int) -> float:
        """Bytes of activations autograd keeps for a batch of ``rows`` x ``width`` tokens."""
        return self._at(self.saved, rows, width)

    def step_flops(self, rows: int, width: int) -> float:
        """FLOPs of forward and backward for a batch of ``rows`` x ``width`` tokens (the loss head apart)."""
        return self._at(self.flops, rows, width)

    def eval_flops(self, rows: int, width: int) -> float:
        """FLOPs of a forward pass without gradients (validation)."""
        return self._at(self.forward_flops, rows, width)


def build_on_meta(path: Path, adapter: AdapterConfig, *, total_steps: int = 1, dtype: torch.dtype = torch.float32,
                  trust_remote_code: bool = False) -> Any:
    """The model of checkpoint ``path`` with the configured method applied, on the meta device.

    A method that loads the base in 4 bits (QLoRA) is built on a model marked as loaded so, which is
    what its builder checks to enable gradient checkpointing; the 4-bit weights themselves are
    counted by :class:`ParamCounts`'s ``frozen_linear``.

    Args:
        path: A checkpoint folder (only its ``config.json`` is read).
        adapter: The ``adapter`` section; the method's own builder applies it.
        total_steps: Optimiser steps of the run (AdaLoRA schedules its rank budget on it).
        dtype: Parameter dtype the model is built in.
        trust_remote_code: Allow model code from the folder.

    Raises:
        ModelError: The configuration cannot be read or the architecture cannot be built.
    """
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        with init_empty_weights():
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code, dtype=dtype)
        # Tied weights (input embeddings and head) are tied by loading but not here, and would count twice. Tying
        # re-registers the head's parameter, which init_empty_weights would replace by a copy: so it is done outside.
        model.tie_weights()
        quantized = get_method(adapter.method).load_kwargs is not None
        if quantized:
            # What the 4-bit loader sets: the method's builder then prepares the model as it would a quantised one.
            model.is_loaded_in_4bit = True
        with init_empty_weights():
            model = apply_adapter(model, adapter, BuildContext(total_steps=total_steps, model_path=path))
        if quantized:
            # Preparing a 4-bit model casts its other weights to fp32; here every weight looks like one of those,
            # but the quantised layers compute in bf16, so the model goes back to the compute dtype.
            model.to(dtype)
        return model
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot build the model in {path} to plan it: {exc}") from exc


def count_parameters(model: Any) -> ParamCounts:
    """Total, trainable and quantisable parameter counts of ``model`` (meta or real)."""
    head = _base(model).get_output_embeddings()
    head_weight = getattr(head, "weight", None)
    frozen_linear = sum(m.weight.numel() for m in model.modules()
                        if isinstance(m, torch.nn.Linear) and m is not head and m.weight is not head_weight
                        and not m.weight.requires_grad)
    params = list(model.parameters())  # shared (tied) tensors appear once
    return ParamCounts(total=sum(p.numel() for p in params), trainable=sum(p.numel() for p in params if p.requires_grad),
                       frozen_linear=frozen_linear)


def _base(model: Any) -> Any:
    return model.get_base_model() if isinstance(model, PeftModel) else model


def is_prompt_learning(model: Any) -> bool:
    """Whether the method runs PEFT's own forward (prefix and prompt tuning), as the loss does for them."""
    return isinstance(model, PeftModel) and model.active_peft_config.is_prompt_learning


class _FusedAttention(torch.autograd.Function):
    """A fused attention kernel's bookkeeping without its arithmetic: keeps what those kernels keep for backward
    (queries, keys, values, the output, an fp32 log-sum-exp per query row) and passes gradients of the right shapes."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = q.new_empty(*q.shape[:-1], v.shape[-1])
        ctx.save_for_backward(q, k, v, out, q.new_empty(q.shape[:-1], dtype=torch.float32))
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = ctx.saved_tensors[:3]
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


class _Attention(TorchFunctionMode):
    """Routes scaled-dot-product attention to :class:`_FusedAttention` while tracing, and counts its FLOPs.

    On meta tensors PyTorch would take the unfused path and keep the score matrix, while the
    CPU and GPU kernels tunesmith trains with are fused and keep only their inputs and output.
    """

    def __init__(self) -> None:
        super().__init__()
        self.forward_flops = self.train_flops = 0.0

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if func is not F.scaled_dot_product_attention:
            return func(*args, **(kwargs or {}))
        q, k, v = args[:3]
        # QK^T and the weighted sum of V; the fused backward kernel costs twice that when any of q, k, v needs a gradient.
        forward = 2.0 * q.numel() * k.shape[-2] + 2.0 * q.numel() // q.shape[-1] * v.shape[-1] * k.shape[-2]
        self.forward_flops += forward
        self.train_flops += forward * (3 if q.requires_grad or k.requires_grad or v.requires_grad else 1)
        return _FusedAttention.apply(q, k, v)


class _Operations(TorchDispatchMode):
    """Counts the operations that launch work (views, which only relabel memory, excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if not any(r.alias_info is not None and not r.alias_info.is_write for r in func._schema.returns):
            self.count += 1
        return func(*args, **(kwargs or {}))


@dataclass(frozen=True)
class _Trace:
    saved: float
    forward_flops: float
    train_flops: float
    attention_forward_flops: float
    attention_train_flops: float
    forward_ops: int
    train_ops: int


def _trace(model: Any, rows: int, width: int, backward: bool) -> _Trace:
    """One forward (and backward) pass on meta tensors of ``rows`` x ``width`` tokens, with what it kept and cost."""
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        # Views share a storage, and weights (kept as views by matrix products) are counted as weights.
        if storage._cdata not in params:
            kept[storage._cdata] = storage.nbytes()
        return t

    ids = torch.zeros(rows, width, dtype=torch.long, device="meta")
    attention, forward_ops, backward_ops = _Attention(), _Operations(), _Operations()
    # Counting every operation is slow in Python; the pass that only measures memory skips it.
    forward_flops, backward_flops = FlopCounterMode(display=False), FlopCounterMode(display=False)
    counting = (forward_ops, forward_flops) if backward else (nullcontext(), nullcontext())
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), attention, counting[0], counting[1]:
            if is_prompt_learning(model):
                out = model(input_ids=ids).logits
            else:
                out = getattr(_base(model), _base(model).base_model_prefix)(input_ids=ids).last_hidden_state
        if backward and out.requires_grad:
            with backward_ops, backward_flops:
                out.sum().backward()
    except (RuntimeError, NotImplementedError, TypeError) as exc:
        raise ModelError(f"cannot trace a training step of this architecture on the meta device: {exc}") from exc
    fwd = forward_flops.get_total_flops()
    return _Trace(sum(kept.values()), fwd, fwd + backward_flops.get_total_flops(), attention.forward_flops,
                  attention.train_flops, forward_ops.count, forward_ops.count + backward_ops.count)


def step_cost(model: Any) -> StepCost:
    """Trace ``model`` (on the meta device, in training mode) and turn the traces into per-token rates.

    One forward and backward pass gives the FLOPs and operation counts (attention's part, which
    grows with width, apart); a second forward at another width separates the activation bytes
    that grow with width (score matrices of unfused attention) from those per token.
    Gradient checkpointing is switched off for tracing and accounted for afterwards: autograd
    then keeps each block's input, one block's activations are rebuilt at a time in the backward
    pass, and the forward runs twice.
    """
    base = _base(model)
    checkpointing = bool(getattr(base, "is_gradient_checkpointing", False))
    if checkpointing:
        base.gradient_checkpointing_disable()
    model.train()
    (w1, w2), n = _PROBE_WIDTHS, _PROBE_ROWS
    short, long = _trace(model, n, w1, backward=False), _trace(model, n, w2, backward=True)
    if checkpointing:
        base.gradient_checkpointing_enable()
    y1, y2 = short.saved / (n * w1), long.saved / (n * w2)
    slope = max(0.0, (y2 - y1) / (w2 - w1))
    saved = (y1 - slope * w1, slope)
    tokens = n * w2
    # Attention FLOPs (counted apart: the counter does not see the stand-in kernel) grow with width; the rest is per token.
    train = (long.train_flops / tokens, long.attention_train_flops / (tokens * w2))
    forward = (long.forward_flops / tokens, long.attention_forward_flops / (tokens * w2))
    train_ops = long.train_ops
    if checkpointing:
        text = base.config.get_text_config()
        layers, hidden = text.num_hidden_layers, text.hidden_size
        element = next(base.parameters()).element_size()
        saved = (saved[0] / layers + layers * hidden * element, saved[1] / layers)
        train = (train[0] + forward[0], train[1] + forward[1])
        train_ops += long.forward_ops
    return StepCost(saved=saved, flops=train, forward_flops=forward, operations=train_ops,
                    forward_operations=long.forward_ops, whole_logits=is_prompt_learning(model),
                    checkpointing=checkpointing)


def head_cost(model: Any) -> tuple[int, int, bool]:
    """(hidden size, vocabulary size, whether the head is trained) of the language-model head.

    The loss applies the head only where a token carries a label (see ``train.loss``), so its
    cost is counted per labelled token: ``2 * hidden * vocab`` FLOPs forward, and the fp32
    log-probabilities autograd keeps plus their gradients, ``3 * vocab * 4`` bytes.
    """
    head = _base(model).get_output_embeddings()
    vocab, hidden = head.weight.shape
    return hidden, vocab, bool(head.weight.requires_grad)
