"""The training loop: AdamW, warm-up and decay, accumulation, validation, early stopping, best checkpoint."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import get_scheduler

from tunesmith.config import TrainConfig
from tunesmith.data.encode import Encoded
from tunesmith.models.load import LoadedModel
from tunesmith.train.batching import collate, length_grouped_batches
from tunesmith.train.loss import completion_loss, evaluate_loss
from tunesmith.ui import make_progress, peak_rss_mb

_SCHEDULERS = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


@dataclass
class TrainResult:
    """What a training run measured.

    Attributes:
        steps: Optimiser steps taken.
        epochs: Passes over the training split completed (fractional).
        seconds: Wall time of the loop, validation included.
        tokens: Non-padding tokens that went through forward and backward passes.
        tokens_per_second: ``tokens / seconds``.
        peak_rss_mb: Peak resident memory of the process at the end of training.
        best_step: The step whose weights were kept (by validation loss), or the last step.
        best_val_loss: Validation loss of the kept weights, or None without a validation split.
        stopped_early: Whether early stopping ended the run.
        final_train_loss: Mean training loss over the last logging window.
    """

    steps: int
    epochs: float
    seconds: float
    tokens: int
    tokens_per_second: float
    peak_rss_mb: float
    best_step: int
    best_val_loss: float | None
    stopped_early: bool
    final_train_loss: float | None
    history: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The result without the per-step history."""
        d = asdict(self)
        d.pop("history")
        return d


class _MetricsLog:
    """Appends one JSON object per event to ``metrics.jsonl`` and keeps them in memory."""

    def __init__(self, path: Path | None):
        self.path, self.rows = path, []
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")

    def write(self, **row: Any) -> None:
        self.rows.append(row)
        if self.path is not None:
            with self.path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")


def _plan_steps(n_train: int, cfg: TrainConfig) -> tuple[int, int]:
    batches_per_epoch = math.ceil(n_train / cfg.batch_size)
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / cfg.grad_accum))
    total = max(1, math.ceil(steps_per_epoch * cfg.epochs))
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    return total, steps_per_epoch


def train_adapter(
    lm: LoadedModel,
    train_set: Sequence[Encoded],
    val_set: Sequence[Encoded],
    cfg: TrainConfig,
    *,
    seed: int,
    metrics_path: Path | None = None,
    on_eval: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train the trainable parameters of ``lm.model`` and keep the best weights in it.

    Validation runs every ``cfg.eval_every`` steps (or once per epoch) and at the end;
    the weights with the lowest validation loss are restored before returning, and
    ``cfg.early_stopping_patience`` evaluations without improvement stop the run.

    Args:
        lm: The loaded model with an adapter applied.
        train_set: Encoded training examples.
        val_set: Encoded validation examples (may be empty: then the last weights are kept).
        cfg: Training settings.
        seed: Seed for data order and dropout.
        metrics_path: Where to write ``metrics.jsonl``.
        on_eval: Called with (step, validation loss) after each validation.

    Returns:
        The measurements of the run.
    """
    model, device = lm.model, lm.device
    pad_id = lm.tokenizer.pad_token_id
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total_steps, steps_per_epoch = _plan_steps(len(train_set), cfg)
    scheduler = get_scheduler(_SCHEDULERS[cfg.scheduler], optimizer,
                              num_warmup_steps=int(cfg.warmup_ratio * total_steps), num_training_steps=total_steps)
    eval_every = cfg.eval_every or steps_per_epoch
    lengths = [len(e.input_ids) for e in train_set]
    log = _MetricsLog(metrics_path)

    best_loss, best_step, best_state = math.inf, 0, None
    bad_evals, stopped_early = 0, False
    step, tokens, window_loss, window_tokens = 0, 0, 0.0, 0
    last_train_loss: float | None = None
    start = time.perf_counter()

    def validate() -> None:
        nonlocal best_loss, best_step, best_state, bad_evals, stopped_early
        if not val_set:
            return
        val_loss = evaluate_loss(model, val_set, pad_id, cfg.batch_size, device, lm.autocast)
        improved = val_loss < best_loss - 1e-4
        log.write(step=step, epoch=round(step / steps_per_epoch, 4), val_loss=val_loss,
                  val_perplexity=math.exp(min(val_loss, 50)), best=improved)
        if on_eval:
            on_eval(step, val_loss)
        if improved:
            best_loss, best_step, bad_evals = val_loss, step, 0
            best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        else:
            bad_evals += 1
            if cfg.early_stopping_patience is not None and bad_evals >= cfg.early_stopping_patience:
                stopped_early = True

    model.train()
    with make_progress() as progress:
        task = progress.add_task("train", total=total_steps, info="")
        epoch = 0
        while step < total_steps and not stopped_early:
            batches = length_grouped_batches(lengths, cfg.batch_size, seed=seed * 1000 + epoch)
            for k in range(0, len(batches), cfg.grad_accum):
                group = batches[k : k + cfg.grad_accum]
                encoded_groups = [[train_set[i] for i in idx] for idx in group]
                n_labels = sum(e.n_completion for g in encoded_groups for e in g)
                step_loss = 0.0
                for items in encoded_groups:
                    batch = {key: v.to(device) for key, v in collate(items, pad_id).items()}
                    with lm.autocast():
                        loss_sum, _ = completion_loss(model, batch)
                    # Normalise by the labelled tokens of the whole accumulated step, not per micro-batch.
                    (loss_sum / max(n_labels, 1)).backward()
                    step_loss += float(loss_sum.detach())
                    tokens += int(batch["attention_mask"].sum())
                if cfg.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                window_loss += step_loss
                window_tokens += n_labels
                elapsed = time.perf_counter() - start
                if step % cfg.logging_steps == 0 or step == total_steps:
                    last_train_loss = window_loss / max(window_tokens, 1)
                    log.write(step=step, epoch=round(step / steps_per_epoch, 4), train_loss=last_train_loss,
                              lr=scheduler.get_last_lr()[0], tokens=tokens, seconds=round(elapsed, 3))
                    window_loss, window_tokens = 0.0, 0
                loss_txt = f"loss {last_train_loss:.3f}" if last_train_loss is not None else ""
                progress.update(task, advance=1, info=f"{loss_txt}  {tokens / max(elapsed, 1e-9):.0f} tok/s")
                if step % eval_every == 0 or step == total_steps:
                    validate()
                if step >= total_steps or stopped_early:
                    break
            epoch += 1

    if best_state is not None:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in best_state:
                    p.copy_(best_state[n])
    else:
        best_step = step
    model.eval()
    seconds = time.perf_counter() - start
    return TrainResult(
        steps=step, epochs=round(step / steps_per_epoch, 4), seconds=round(seconds, 2), tokens=tokens,
        tokens_per_second=round(tokens / seconds, 1) if seconds > 0 else 0.0, peak_rss_mb=round(peak_rss_mb(), 1),
        best_step=best_step, best_val_loss=None if best_state is None else best_loss, stopped_early=stopped_early,
        final_train_loss=last_train_loss, history=log.rows,
    )
