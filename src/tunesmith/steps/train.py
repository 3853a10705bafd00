"""The training step bound to a project's config: the method's trainable parameters, training, the saved adapter."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from tunesmith.config import Config
from tunesmith.console import console
from tunesmith.data.encode import Encoded, encode_example, encode_for_head
from tunesmith.data.examples import Example
from tunesmith.data.prepare import Splits
from tunesmith.models.adapters import BuildContext, apply_adapter, get_method, init_from_adapter, save_adapter
from tunesmith.models.load import LoadedModel
from tunesmith.runs.folder import RunPaths
from tunesmith.steps.model import find_adapter
from tunesmith.train.loop import TrainResult, is_main_process, plan_steps, train_adapter, world_size


def train_model(lm: LoadedModel, splits: Splits, cfg: Config, run: RunPaths, *, resume: bool = False,
                on_eval: Callable[[int, float], None] | None = None,
                on_log: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Give the model the method's trainable parameters (fresh, or from ``adapter.init_from``), train, and save them.

    Args:
        lm: The loaded base model; its ``model`` is replaced by the trainable one.
        splits: The run's data.
        cfg: The run's config.
        run: The run folder (metrics, checkpoints and the saved adapter go there).
        resume: Continue from the run's latest checkpoint.
        on_eval: Called with (step, validation loss) after each validation.
        on_log: Called with every metrics row.

    Raises:
        UserError: ``adapter.init_from`` names no adapter, or one of another method or shape.
    """
    method = get_method(cfg.adapter.method)
    weights = splits.class_weights or {}
    if cfg.adapter.head == "classify":
        index = {lab: i for i, lab in enumerate(splits.labels or [])}

        def encode(ex: Example) -> Encoded:
            return encode_for_head(lm.tokenizer, ex, splits.system_prompt, cfg.model.max_seq_len, index[ex.label])
    else:
        def encode(ex: Example) -> Encoded:
            return encode_example(lm.tokenizer, ex, splits.system_prompt, cfg.model.max_seq_len)
    enc = [replace(encode(ex), weight=weights.get(ex.label or "", 1.0)) for ex in splits.train]
    val = [encode(ex) for ex in splits.validation]
    total, _ = plan_steps(len(enc), cfg.train, world_size())
    torch.manual_seed(cfg.project.seed)
    lm.model = apply_adapter(lm.model, cfg.adapter, BuildContext(total_steps=total, model_path=lm.path))
    if cfg.adapter.init_from and not resume:
        source = find_adapter(cfg.adapter.init_from, cfg.project.runs_dir)
        init_from_adapter(lm.model, cfg.adapter, source)
        console.print(f"Adapter initialised from {source}")

    def _on_eval(step: int, val_loss: float) -> None:
        console.print(f"  step {step}: validation loss {val_loss:.4f}")
        if on_eval is not None:
            on_eval(step, val_loss)

    result = train_adapter(lm, enc, val, cfg.train, seed=cfg.project.seed, method=method, metrics_path=run.metrics,
                           checkpoint_dir=run.checkpoints, resume=resume, on_eval=_on_eval, on_log=on_log)
    if is_main_process():
        save_adapter(lm.model, cfg.adapter, run.adapter)
    return result
