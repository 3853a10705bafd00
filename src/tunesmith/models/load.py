"""Loading a base model and its tokenizer from a local safetensors checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging as hf_logging

from tunesmith.errors import ModelError
from tunesmith.models.precision import choose_precision


@dataclass
class LoadedModel:
    """A model ready to train or generate.

    Attributes:
        model: The causal LM (a PEFT model once an adapter is applied).
        tokenizer: Its tokenizer, with a pad token and a chat template.
        path: The checkpoint folder.
        device: Where it runs.
        autocast_dtype: bf16 when autocast is on, else None.
    """

    model: Any
    tokenizer: Any
    path: Path
    device: torch.device
    autocast_dtype: torch.dtype | None

    def autocast(self) -> Any:
        """A context manager that turns on autocast when chosen, else does nothing."""
        return torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                              enabled=self.autocast_dtype is not None)


def is_classifier(model: Any) -> bool:
    """Whether ``model`` (a PEFT wrapper included) has a classification head rather than a language-model head."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, "score", None) is not None and getattr(base.config, "num_labels", 0) > 0 \
        and base.get_output_embeddings() is None


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_tokenizer(path: Path, trust_remote_code: bool = False) -> Any:
    """Load a tokenizer, giving it a pad token and checking it has a chat template.

    Raises:
        ModelError: The tokenizer has no chat template.
    """
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        raise ModelError(f"the tokenizer in {path} has no chat template; tunesmith renders every example "
                         "with the model's own template, so use an instruct/chat model")
    return tok


def load_base_model(path: Path, precision: str = "auto", trust_remote_code: bool = False,
                    device: torch.device | None = None, load_kwargs: dict[str, Any] | None = None,
                    labels: list[str] | None = None) -> LoadedModel:
    """Load a causal LM in fp32 from safetensors only.

    Weights stay fp32 (the master copy); bf16 is applied by autocast where the hardware
    supports it, decided here at run time.

    Args:
        path: A local checkpoint folder.
        precision: ``auto``, ``fp32`` or ``bf16``.
        trust_remote_code: Allow custom model code from the folder.
        device: Override the device.
        load_kwargs: Extra ``from_pretrained`` arguments, e.g. a 4-bit quantisation config (then the
            weights are placed on the GPU by the loader and compute runs in bf16).
        labels: Load for classification with a head (``adapter.head: classify``): the backbone with a
            fresh linear head over these labels (``AutoModelForSequenceClassification``), which reads
            the last token that is not padding. A folder exported with its head keeps its own.

    Raises:
        ModelError: The checkpoint cannot be loaded.
    """
    device = device or default_device()
    quantized = bool(load_kwargs and "quantization_config" in load_kwargs)
    try:
        tok = load_tokenizer(path, trust_remote_code)
        extra = {"device_map": {"": device.index or 0}, "dtype": torch.bfloat16} if quantized else {"dtype": torch.float32}
        if labels is not None:
            # The new head is missing from the checkpoint by design: transformers' load report would say so loudly.
            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()
            heads = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                     "label2id": {lab: i for i, lab in enumerate(labels)}, "pad_token_id": tok.pad_token_id}
            try:
                model = AutoModelForSequenceClassification.from_pretrained(
                    path, use_safetensors=True, trust_remote_code=trust_remote_code, **heads, **extra, **(load_kwargs or {}))
            finally:
                hf_logging.set_verbosity(verbosity)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, trust_remote_code=trust_remote_code,
                                                         **extra, **(load_kwargs or {}))
    except (OSError, ValueError, ImportError) as exc:
        raise ModelError(f"cannot load the model in {path}: {exc}") from exc
    if not quantized:  # a quantised model is placed by its loader and cannot be moved
        model.to(device)
    model.eval()
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return LoadedModel(model, tok, path, device, choose_precision(precision, device))
