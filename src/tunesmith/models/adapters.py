"""Training methods: one registry entry each, holding the method's option schema and builder.

A method turns a loaded base model into one whose trainable parameters are the method's
(a PEFT adapter, the last blocks, or every weight), and knows how to save those weights,
load them back onto a base model, and merge them into a plain model. Adding a method means
one :func:`register_method` call in this file and one row in ``tests/models/test_adapters.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from peft import (AdaLoraConfig, IA3Config, LoraConfig, PeftConfig, PeftModel, PrefixTuningConfig,
                  PromptTuningConfig, get_peft_model, prepare_model_for_kbit_training, set_peft_model_state_dict)
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors.torch import load_file, save_file
from transformers import BitsAndBytesConfig

from tunesmith.config import AdapterConfig
from tunesmith.errors import ConfigError, ModelError

MARKER = "tunesmith_adapter.json"
WEIGHTS = "trainable.safetensors"


class NoOptions(BaseModel):
    """A method without settings of its own (and the base of every method's option schema)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


@dataclass(frozen=True)
class BuildContext:
    """What a builder may need besides the config.

    Attributes:
        total_steps: Optimiser steps the run will take (AdaLoRA schedules its rank budget on it).
        model_path: The base checkpoint folder (prompt tuning reads its tokenizer for text init).
    """

    total_steps: int = 1
    model_path: Path | None = None


@dataclass(frozen=True)
class Method:
    """One training method.

    Attributes:
        name: The value of ``adapter.method``.
        summary: One line for ``tunesmith methods``.
        options: Pydantic schema of ``adapter.options`` for this method (defaults and docs live there).
        build: (model, adapter config, options, context) -> the model with this method's trainable parameters.
        default_lr: Learning rate used when ``train.lr`` is not set.
        family: ``peft`` (saved as a PEFT adapter) or ``weights`` (trainable tensors saved as safetensors).
        needs_cuda: The method cannot run without a CUDA GPU.
        mergeable: Whether the trained weights can be folded into a plain model.
        load_kwargs: Extra ``from_pretrained`` arguments for the base model (4-bit quantisation).
        on_step: Called after each optimiser step with (model, step) (AdaLoRA's rank reallocation).
        extra_loss: A regulariser added to each step's loss (AdaLoRA's orthogonality penalty).
        check: Cross-field checks of (adapter config, options) run before any work.
    """

    name: str
    summary: str
    options: type[BaseModel]
    build: Callable[[Any, AdapterConfig, Any, BuildContext], Any]
    default_lr: float
    family: Literal["peft", "weights"] = "peft"
    needs_cuda: bool = False
    mergeable: bool = True
    load_kwargs: Callable[[Any], dict[str, Any]] | None = None
    on_step: Callable[[Any, int], None] | None = None
    extra_loss: Callable[[Any], torch.Tensor] | None = None
    check: Callable[[AdapterConfig, Any], None] | None = None


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add a method to the registry.

    Raises:
        ValueError: The name is taken.
    """
    if method.name in METHODS:
        raise ValueError(f"adapter method {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


# --- the PEFT family -------------------------------------------------------------------------


def _peft(make: Callable[[AdapterConfig, Any, BuildContext], PeftConfig]) -> Callable[..., Any]:
    def build(model: Any, cfg: AdapterConfig, opts: Any, ctx: BuildContext) -> Any:
        return get_peft_model(model, make(cfg, opts, ctx))
    return build


def task_type(cfg: AdapterConfig) -> str:
    """PEFT's task type: a causal LM, or sequence classification (its head is then trained and saved with the adapter)."""
    return "SEQ_CLS" if cfg.head == "classify" else "CAUSAL_LM"


def _lora_config(cfg: AdapterConfig, **extra: Any) -> LoraConfig:
    return LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=cfg.target_modules,
                      task_type=task_type(cfg), bias="none", **extra)


register_method(Method("lora", "Low-rank update on every targeted linear layer (Hu et al. 2021).", NoOptions,
                       _peft(lambda cfg, o, ctx: _lora_config(cfg)), default_lr=1e-3))
register_method(Method("dora", "LoRA with the weight split into magnitude and direction (Liu et al. 2024).",
                       NoOptions, _peft(lambda cfg, o, ctx: _lora_config(cfg, use_dora=True)), default_lr=1e-3))
register_method(Method("rslora", "LoRA scaled by alpha/sqrt(r), stable at high ranks (Kalajdzievski 2023).",
                       NoOptions, _peft(lambda cfg, o, ctx: _lora_config(cfg, use_rslora=True)), default_lr=1e-3))


class IA3Options(NoOptions):
    """Settings of IA3."""

    target_modules: list[str] | None = None
    """Modules whose activations are rescaled; None uses PEFT's choice for the architecture (keys, values, FFN output)."""
    feedforward_modules: list[str] | None = None
    """Which of them are feed-forward (scaled on their input); None uses PEFT's choice."""


register_method(Method(
    "ia3", "Learned rescaling vectors on keys, values and feed-forward activations (Liu et al. 2022).", IA3Options,
    _peft(lambda cfg, o, ctx: IA3Config(task_type=task_type(cfg), target_modules=o.target_modules,
                                        feedforward_modules=o.feedforward_modules)),
    default_lr=3e-3))


class AdaLoraOptions(NoOptions):
    """Settings of AdaLoRA; the target rank is ``adapter.r``."""

    init_r: int = Field(24, gt=0)
    """Starting rank of every layer before the budget is reallocated."""
    tinit_ratio: float = Field(0.1, ge=0, lt=1)
    """Fraction of the steps trained at ``init_r`` before pruning starts."""
    tfinal_ratio: float = Field(0.2, ge=0, lt=1)
    """Fraction of the steps at the end trained with the final ranks fixed."""
    delta_t: int = Field(1, gt=0)
    """Steps between two budget reallocations."""
    orth_reg_weight: float = Field(0.5, ge=0)
    """Weight of the penalty that keeps the singular vectors orthogonal."""


def _adalora_check(cfg: AdapterConfig, o: AdaLoraOptions) -> None:
    if o.init_r <= cfg.r:
        raise ConfigError(f"adapter.options.init_r: AdaLoRA prunes from init_r down to adapter.r ({cfg.r}), "
                          f"so init_r must be larger (got {o.init_r})")


def _adalora_config(cfg: AdapterConfig, o: AdaLoraOptions, ctx: BuildContext) -> AdaLoraConfig:
    _adalora_check(cfg, o)
    total = max(ctx.total_steps, 3)
    tinit, tfinal = int(o.tinit_ratio * total), int(o.tfinal_ratio * total)
    if total - tinit - tfinal <= 0:
        raise ConfigError("adapter.options: AdaLoRA needs steps between tinit_ratio and tfinal_ratio; lower them")
    return AdaLoraConfig(task_type=task_type(cfg), init_r=o.init_r, target_r=cfg.r, tinit=tinit,
                         tfinal=tfinal, deltaT=o.delta_t, total_step=total, lora_alpha=cfg.alpha,
                         lora_dropout=cfg.dropout, target_modules=cfg.target_modules, orth_reg_weight=o.orth_reg_weight)


def _adalora_step(model: Any, step: int) -> None:
    # The rank budget is reallocated from the gradients' sensitivity, so this runs before they are cleared.
    model.base_model.update_and_allocate(step)


def _adalora_penalty(model: Any) -> torch.Tensor:
    """PEFT adds this inside ``AdaLoraModel.forward`` only when labels are passed; tunesmith computes its own loss."""
    name = model.base_model.trainable_adapter_name
    weight = model.peft_config[name].orth_reg_weight
    terms = []
    for n, p in model.named_parameters():
        if ("lora_A" in n or "lora_B" in n) and name in n and p.requires_grad:
            cov = p @ p.T if "lora_A" in n else p.T @ p
            terms.append(torch.linalg.matrix_norm(cov - torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)))
    return weight * torch.stack(terms).mean() if terms else torch.zeros(())


register_method(Method(
    "adalora", "LoRA whose rank budget moves to the layers that matter during training (Zhang et al. 2023).",
    AdaLoraOptions, _peft(_adalora_config), default_lr=1e-3, check=_adalora_check, on_step=_adalora_step,
    extra_loss=_adalora_penalty))


class VirtualTokenOptions(NoOptions):
    """Settings of prefix and prompt tuning."""

    num_virtual_tokens: int = Field(20, gt=0)
    """How many trained virtual tokens are put before every input."""


class PromptOptions(VirtualTokenOptions):
    """Settings of prompt tuning."""

    init_text: str | None = None
    """Initialise the virtual tokens from this text's embeddings; None starts from random ones."""


def _prompt_config(cfg: AdapterConfig, o: PromptOptions, ctx: BuildContext) -> PromptTuningConfig:
    if o.init_text is None:
        return PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=o.num_virtual_tokens)
    return PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=o.num_virtual_tokens,
                              prompt_tuning_init="TEXT", prompt_tuning_init_text=o.init_text,
                              tokenizer_name_or_path=str(ctx.model_path))


register_method(Method(
    "prefix", "Trained key/value prefixes in every attention layer (Li & Liang 2021).", VirtualTokenOptions,
    _peft(lambda cfg, o, ctx: PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=o.num_virtual_tokens)),
    default_lr=1e-2, mergeable=False))
register_method(Method("prompt", "Trained soft-prompt embeddings before the input (Lester et al. 2021).",
                       PromptOptions, _peft(_prompt_config), default_lr=3e-2, mergeable=False))


class QLoraOptions(NoOptions):
    """Settings of QLoRA."""

    double_quant: bool = True
    """Quantise the quantisation constants too (saves about 0.4 bits per weight)."""
    gradient_checkpointing: bool = True
    """Recompute activations in the backward pass to save GPU memory."""


def _qlora_load_kwargs(o: QLoraOptions) -> dict[str, Any]:
    return {"quantization_config": BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=o.double_quant,
        bnb_4bit_compute_dtype=torch.bfloat16)}


def _qlora_build(model: Any, cfg: AdapterConfig, o: QLoraOptions, ctx: BuildContext) -> Any:
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=o.gradient_checkpointing)
    return get_peft_model(model, _lora_config(cfg))


register_method(Method(
    "qlora", "LoRA on a 4-bit NF4 base through bitsandbytes (Dettmers et al. 2023); needs a CUDA GPU.",
    QLoraOptions, _qlora_build, default_lr=1e-3, needs_cuda=True, load_kwargs=_qlora_load_kwargs))


# --- methods that train the model's own weights ----------------------------------------------


def _decoder_blocks(model: Any) -> torch.nn.ModuleList:
    """The model's stack of transformer blocks: its longest ``ModuleList``."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    if not lists:
        raise ModelError("adapter.method freeze: the model has no list of transformer blocks to unfreeze")
    return max(lists, key=len)


class FreezeOptions(NoOptions):
    """Settings of partial fine-tuning."""

    trainable_blocks: int = Field(2, gt=0)
    """How many of the last transformer blocks are trained."""
    train_head: bool = True
    """Also train the final norm and the output head (tied to the input embeddings in many small models)."""


def _freeze_build(model: Any, cfg: AdapterConfig, o: FreezeOptions, ctx: BuildContext) -> Any:
    model.requires_grad_(False)
    blocks = _decoder_blocks(model)
    if o.trainable_blocks > len(blocks):
        raise ConfigError(f"adapter.options.trainable_blocks: the model has only {len(blocks)} blocks")
    for block in blocks[-o.trainable_blocks:]:
        block.requires_grad_(True)
    classifier = getattr(model, "score", None)
    if classifier is not None:  # a classification head is new: it always trains
        classifier.requires_grad_(True)
    if o.train_head:
        (model.get_output_embeddings() or classifier).requires_grad_(True)
        backbone = getattr(model, model.base_model_prefix, None)
        norm = getattr(backbone, "norm", None) or getattr(backbone, "ln_f", None)
        if norm is not None:
            norm.requires_grad_(True)
    return model


def _full_build(model: Any, cfg: AdapterConfig, o: NoOptions, ctx: BuildContext) -> Any:
    model.requires_grad_(True)
    return model


register_method(Method("freeze", "Train only the last N transformer blocks and the head; the rest stays frozen.",
                       FreezeOptions, _freeze_build, default_lr=1e-4, family="weights"))
register_method(Method("full", "Train every weight of the model.", NoOptions, _full_build, default_lr=2e-5,
                       family="weights"))


# --- using the registry ------------------------------------------------------------------------


def get_method(name: str) -> Method:
    """The registered method called ``name``.

    Raises:
        ConfigError: No such method.
    """
    if name not in METHODS:
        raise ConfigError(f"adapter.method: unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def method_options(cfg: AdapterConfig) -> BaseModel:
    """``adapter.options`` validated against the method's schema.

    Raises:
        ConfigError: Unknown method, or an option it does not have or with a bad value (named).
    """
    method = get_method(cfg.method)
    try:
        return method.options.model_validate(cfg.options)
    except ValidationError as exc:
        problems = "; ".join(f"adapter.options.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{problems} (method {cfg.method})") from exc


def check_adapter(cfg: AdapterConfig, cuda_available: bool | None = None) -> Method:
    """Check the method, its options and its hardware needs before any work starts.

    Raises:
        ConfigError: Unknown method, bad options, or a CUDA-only method on a machine without CUDA.
    """
    method = get_method(cfg.method)
    options = method_options(cfg)
    if method.check is not None:
        method.check(cfg, options)
    if cfg.head == "classify" and cfg.method in ("prefix", "prompt"):
        raise ConfigError(f"adapter.head: classify trains a head beside the adapter; adapter.method {cfg.method} adds "
                          "virtual tokens instead: use lora, dora, rslora, ia3, adalora, freeze or full")
    has_cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    if method.needs_cuda and not has_cuda:
        raise ConfigError(
            f"adapter.method {cfg.method} needs a CUDA GPU (bitsandbytes 4-bit kernels) and this machine has none; "
            "use adapter.method: lora, the same adapter on a full-precision base, which runs on the CPU")
    return method


def learning_rate(cfg: AdapterConfig, lr: float | None) -> float:
    """``train.lr`` when set, else the method's usual rate."""
    return lr if lr is not None else get_method(cfg.method).default_lr


def apply_adapter(model: Any, cfg: AdapterConfig, ctx: BuildContext | None = None) -> Any:
    """Give ``model`` the method's fresh trainable parameters.

    Raises:
        ConfigError: The method is unknown or its settings do not fit the model.
    """
    method = get_method(cfg.method)
    try:
        model = method.build(model, cfg, method_options(cfg), ctx or BuildContext())
    except ValueError as exc:
        raise ConfigError(f"adapter: {exc}") from exc
    return model


def prompt_learning(model: Any) -> bool:
    """Whether the model is a PEFT prompt-learning model (prefix or prompt tuning: virtual tokens)."""
    return isinstance(model, PeftModel) and model.active_peft_config.is_prompt_learning


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    """The trainable tensors by name (shared tensors once), detached copies on the CPU."""
    return {n: p.detach().to("cpu", copy=True).contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_adapter(model: Any, cfg: AdapterConfig, out: Path) -> None:
    """Save the trained weights and a marker naming the method, so :func:`load_adapter` can restore them."""
    method = get_method(cfg.method)
    out.mkdir(parents=True, exist_ok=True)
    if method.family == "peft":
        model.save_pretrained(out)
    else:
        save_file(trainable_state(model), str(out / WEIGHTS))
    (out / MARKER).write_text(json.dumps({"method": cfg.method, "options": cfg.options, "family": method.family}))


def saved_method(path: Path) -> str:
    """The method of a saved adapter folder.

    Raises:
        ModelError: The folder holds no saved adapter.
    """
    if (path / MARKER).is_file():
        return json.loads((path / MARKER).read_text())["method"]
    if (path / "adapter_config.json").is_file():  # saved by PEFT directly, or by tunesmith before the marker
        return "lora"
    raise ModelError(f"{path} holds no saved adapter ({MARKER} or adapter_config.json)")


def has_adapter(path: Path) -> bool:
    """Whether ``path`` holds a saved adapter."""
    return (path / MARKER).is_file() or (path / "adapter_config.json").is_file()


def _load_weights(model: Any, path: Path) -> Any:
    tensors = load_file(str(path / WEIGHTS))
    missing = set(tensors) - {n for n, _ in model.named_parameters()}
    if missing:
        raise ModelError(f"{path}: weights for parameters this model lacks: {sorted(missing)[:3]}")
    model.load_state_dict(tensors, strict=False)
    return model


def load_adapter(model: Any, path: Path, trainable: bool = False) -> Any:
    """Put a saved adapter (or trained weights) onto a freshly loaded base model.

    Raises:
        ModelError: The folder holds no adapter, or one that does not fit the model.
    """
    method = get_method(saved_method(path))
    if method.family == "weights":
        model = _load_weights(model, path)
    else:
        model = PeftModel.from_pretrained(model, path, is_trainable=trainable)
    if not trainable:
        model.eval()
    return model


def init_from_adapter(model: Any, cfg: AdapterConfig, path: Path) -> None:
    """Copy a saved adapter's weights into the freshly built trainable parameters (transfer learning).

    Raises:
        ConfigError: The saved adapter is of another method or does not fit.
    """
    saved = saved_method(path)
    if saved != cfg.method:
        raise ConfigError(f"adapter.init_from: {path} holds a {saved} adapter, but adapter.method is {cfg.method}")
    if get_method(saved).family == "weights":
        _load_weights(model, path)
        return
    result = set_peft_model_state_dict(model, load_file(str(path / "adapter_model.safetensors")))
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ConfigError(f"adapter.init_from: {path} does not fit this model (e.g. {unexpected[0]}); "
                          "use an adapter trained with the same base model, rank and target modules")


def merge_adapter(model: Any, method_name: str) -> Any:
    """Fold trained adapter weights into the base and return the plain model.

    Raises:
        UserError: The method keeps virtual tokens that cannot be merged (prefix, prompt).
    """
    method = get_method(method_name)
    if not method.mergeable:
        raise ConfigError(f"a {method_name} adapter adds virtual tokens at run time and cannot be merged into the "
                          "base weights; serve the base model with the adapter instead")
    if method.family == "weights":
        return model
    return model.merge_and_unload()
