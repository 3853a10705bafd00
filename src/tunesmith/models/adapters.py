"""Adapter methods: one registry entry each, holding how the method is built from the config.

Adding a method means one :func:`register_adapter` call here and one test row.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model

from tunesmith.config import AdapterConfig
from tunesmith.errors import ConfigError

ADAPTERS: dict[str, Callable[[AdapterConfig], PeftConfig]] = {}


def register_adapter(name: str) -> Callable[[Callable[[AdapterConfig], PeftConfig]], Callable[[AdapterConfig], PeftConfig]]:
    """Register a builder that turns the adapter config into a PEFT config.

    Raises:
        ValueError: The name is taken.
    """

    def deco(fn: Callable[[AdapterConfig], PeftConfig]) -> Callable[[AdapterConfig], PeftConfig]:
        if name in ADAPTERS:
            raise ValueError(f"adapter method {name!r} is already registered")
        ADAPTERS[name] = fn
        return fn

    return deco


@register_adapter("lora")
def _lora(cfg: AdapterConfig) -> PeftConfig:
    return LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                      target_modules=cfg.target_modules, task_type="CAUSAL_LM", bias="none")


def check_adapter_method(cfg: AdapterConfig) -> None:
    """Raise a config error naming ``adapter.method`` when the method is unknown.

    Raises:
        ConfigError: The method is not registered.
    """
    if cfg.method not in ADAPTERS:
        raise ConfigError(f"adapter.method: unknown method {cfg.method!r}; available: {', '.join(sorted(ADAPTERS))}")


def apply_adapter(model: Any, cfg: AdapterConfig) -> PeftModel:
    """Wrap ``model`` with a fresh, trainable adapter.

    Raises:
        ConfigError: The method is unknown or its settings do not fit the model.
    """
    check_adapter_method(cfg)
    try:
        return get_peft_model(model, ADAPTERS[cfg.method](cfg))
    except ValueError as exc:
        raise ConfigError(f"adapter: {exc}") from exc


def load_adapter(model: Any, path: Path) -> PeftModel:
    """Load a saved PEFT adapter onto a base model, for inference."""
    peft_model = PeftModel.from_pretrained(model, path)
    peft_model.eval()
    return peft_model
