"""The training loop: AdamW, warm-up and decay, accumulation, validation, early stopping, best checkpoint."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from transformers import get_scheduler

from tunesmith.config import TrainConfig
from tunesmith.data.encode import Encoded
from tunesmith.errors import UserError
from tunesmith.models.adapters import Method, get_method, trainable_state
from tunesmith.models.load import LoadedModel
from tunesmith.fastpath.apply import FastPathReport, fast_path
from tunesmith.train.checkpoint import LoopState, latest_checkpoint, load_checkpoint, restore_rng, save_checkpoint
from tunesmith.train.batching import collate, collate_packed, packed_passes, random_batches
from tunesmith.train.loss import completion_loss, evaluate_loss
from tunesmith.console import make_progress, peak_rss_mb

_SCHEDULERS = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


@dataclass
class TrainResult:
    """What a training run measured.

    Attributes:
        steps: Optimiser steps taken.
        epochs: Passes over the training split completed (fractional).
        seconds: Wall time of the loop, validation included.
        tokens: Non-padding tokens of the examples trained on (each example's every token, every time).
        tokens_per_second: ``tokens / seconds``.
        computed_tokens: Tokens the model computed for them (this process's share under several
            processes): fewer than ``tokens`` where a batch's examples share a prefix that is
            computed once (padding excluded).
        peak_rss_mb: Peak resident memory of the process at the end of training.
        best_step: The step whose weights were kept (by validation loss), or the last step.
        best_val_loss: Validation loss of the kept weights, or None without a validation split.
        stopped_early: Whether early stopping ended the run.
        final_train_loss: Mean training loss over the last logging window.
        history: Every row of ``metrics.jsonl``.
        resumed_from: The checkpoint step this process continued from, or None.
        fast_path: What :func:`~tunesmith.fastpath.apply.fast_path` applied to the model (its report as a dict).
    """

    steps: int
    epochs: float
    seconds: float
    tokens: int
    tokens_per_second: float
    computed_tokens: int
    peak_rss_mb: float
    best_step: int
    best_val_loss: float | None
    stopped_early: bool
    final_train_loss: float | None
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int | None = None
    fast_path: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The result without the per-step history."""
        d = asdict(self)
        d.pop("history")
        return d


class _MetricsLog:
    """Appends one JSON object per event to ``metrics.jsonl``, keeps them in memory and passes them on."""

    def __init__(self, path: Path | None, on_log: Callable[[dict[str, Any]], None] | None = None,
                 rows: list[dict[str, Any]] | None = None):
        # A resumed run starts from the checkpoint's rows: anything logged after it is redone.
        self.path, self.rows, self.on_log = path, rows if rows is not None else [], on_log
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r) + "\n" for r in self.rows))

    def write(self, **row: Any) -> None:
        self.rows.append(row)
        if self.on_log is not None:
            self.on_log(row)
        if self.path is not None:
            with self.path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")


def plan_steps(n_train: int, cfg: TrainConfig, world: int = 1) -> tuple[int, int]:
    """(total optimiser steps, steps per epoch) for ``n_train`` examples on ``world`` processes."""
    batches_per_epoch = math.ceil(n_train / (cfg.batch_size * world))
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / cfg.grad_accum))
    total = max(1, math.ceil(steps_per_epoch * cfg.epochs))
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    return total, steps_per_epoch


class _StepLoss(torch.nn.Module):
    """The model with the completion loss as its forward, so a DDP or FSDP wrapper sees one forward per micro-batch."""

    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    def forward(self, **batch: torch.Tensor) -> tuple[torch.Tensor, int]:
        return completion_loss(self.model, batch)


def world_size() -> int:
    """How many training processes were launched (``accelerate launch`` sets ``WORLD_SIZE``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Whether this is the first (or only) training process: the one that writes files and evaluates."""
    return int(os.environ.get("RANK", "0")) == 0


def _accelerator() -> Any:
    """An ``accelerate`` accelerator when launched as several processes, else None."""
    return Accelerator(cpu=not torch.cuda.is_available()) if world_size() > 1 else None


def train_adapter(
    lm: LoadedModel,
    train_set: Sequence[Encoded],
    val_set: Sequence[Encoded],
    cfg: TrainConfig,
    *,
    seed: int,
    method: Method | None = None,
    metrics_path: Path | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    on_eval: Callable[[int, float], None] | None = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train the trainable parameters of ``lm.model`` and keep the best weights in it.

    Validation runs every ``cfg.eval_every`` steps (or once per epoch) and at the end; the
    weights with the lowest validation loss are restored before returning, and
    ``cfg.early_stopping_patience`` validations without improvement stop the run. With
    ``checkpoint_dir``, a resumable checkpoint is written every ``cfg.checkpoint_every`` steps
    (default: at each validation); with ``resume``, training continues from the latest one and
    ends where an uninterrupted run would. The model trains on the fast path that ``cfg.fast_path``
    asks for (:func:`~tunesmith.fastpath.apply.fast_path`): the same arithmetic with less time and
    memory; when it returns, the model is again as transformers and PEFT define it.

    Launched as several processes (``accelerate launch``), each process takes an equal share of
    every batch (``cfg.batch_size`` is per process) and gradients are averaged by DDP or FSDP,
    so N processes give the result of one process with N times the batch.

    Args:
        lm: The loaded model with the method's trainable parameters.
        train_set: Encoded training examples.
        val_set: Encoded validation examples (may be empty: then the last weights are kept).
        cfg: Training settings.
        seed: Seed for data order and dropout.
        method: The training method, for its learning rate and per-step hooks; None means plain LoRA.
        metrics_path: Where to write ``metrics.jsonl``.
        checkpoint_dir: Where resumable checkpoints go; None writes none.
        resume: Continue from the latest checkpoint in ``checkpoint_dir``.
        on_eval: Called with (step, validation loss) after each validation; an exception it raises
            stops training and propagates (a sweep prunes a trial this way).
        on_log: Called with every row written to ``metrics.jsonl`` (experiment trackers subscribe here).

    Returns:
        The measurements of the run.

    Raises:
        UserError: ``resume`` without a readable checkpoint.
    """
    with fast_path(lm, cfg.fast_path) as applied:
        return _train(lm, train_set, val_set, cfg, applied, seed=seed, method=method, metrics_path=metrics_path,
                      checkpoint_dir=checkpoint_dir, resume=resume, on_eval=on_eval, on_log=on_log)


def _train(lm: LoadedModel, train_set: Sequence[Encoded], val_set: Sequence[Encoded], cfg: TrainConfig,
           applied: FastPathReport, *, seed: int, method: Method | None, metrics_path: Path | None,
           checkpoint_dir: Path | None, resume: bool, on_eval: Callable[[int, float], None] | None,
           on_log: Callable[[dict[str, Any]], None] | None) -> TrainResult:
    """:func:`train_adapter`'s loop, on the model as the fast path left it (``applied`` says how)."""
    method = method or get_method("lora")
    model, device = lm.model, lm.device
    pad_id = lm.tokenizer.pad_token_id
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(seed)
    acc = _accelerator()
    world, rank = (acc.num_processes, acc.process_index) if acc else (1, 0)
    params = [p for p in model.parameters() if p.requires_grad]
    lr = cfg.lr if cfg.lr is not None else method.default_lr
    # The fused AdamW (one kernel per tensor; what transformers' Trainer uses by default) took
    # 13.5 ms a step against 35 ms for the per-operator loop on the embedded model's LoRA tensors.
    # Processes under accelerate keep the default: not every sharding wraps fused kernels.
    fused = acc is None and all(p.device.type in ("cpu", "cuda") for p in params)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay, fused=fused or None)
    total_steps, steps_per_epoch = plan_steps(len(train_set), cfg, world)
    scheduler = get_scheduler(_SCHEDULERS[cfg.scheduler], optimizer,
                              num_warmup_steps=int(cfg.warmup_ratio * total_steps), num_training_steps=total_steps)
    step_loss_module: Any = _StepLoss(model)
    if acc is not None:
        step_loss_module, optimizer = acc.prepare(step_loss_module, optimizer)
    eval_every = cfg.eval_every or steps_per_epoch
    checkpoint_every = cfg.checkpoint_every or eval_every
    pack = applied.packing
    saves = checkpoint_dir is not None and rank == 0

    st, best_state, resumed_from = LoopState(), None, None
    if resume:
        folder = latest_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
        if folder is None:
            raise UserError(f"no checkpoint to resume from in {checkpoint_dir}")
        ck = load_checkpoint(folder)
        st, best_state, resumed_from = ck.state, ck.best, ck.state.step
        _copy_into(model, ck.trainable)
        optimizer.load_state_dict(ck.optimizer)
        scheduler.load_state_dict(ck.scheduler)
        restore_rng(ck.rng)
    log = _MetricsLog(metrics_path if rank == 0 else None, on_log, st.history)
    start = time.perf_counter()

    def elapsed() -> float:
        return st.seconds + time.perf_counter() - start

    def validate() -> None:
        nonlocal best_state
        if not val_set:
            return
        val_loss = evaluate_loss(model, val_set, pad_id, cfg.batch_size, device, lm.autocast)
        improved = val_loss < st.best_loss - 1e-4
        log.write(step=st.step, epoch=round(st.step / steps_per_epoch, 4), val_loss=val_loss,
                  val_perplexity=math.exp(min(val_loss, 50)), best=improved)
        if on_eval:
            on_eval(st.step, val_loss)
        if improved:
            st.best_loss, st.best_step, st.bad_evals = val_loss, st.step, 0
            best_state = trainable_state(model)
        else:
            st.bad_evals += 1
            if cfg.early_stopping_patience is not None and st.bad_evals >= cfg.early_stopping_patience:
                st.stopped_early = True

    model.train()
    with make_progress() as progress:
        task = progress.add_task("train", total=total_steps, completed=st.step, info="")
        while st.step < total_steps and not st.stopped_early:
            batches = random_batches(len(train_set), cfg.batch_size * world, seed=seed * 1000 + st.epoch)
            while st.group * cfg.grad_accum < len(batches):
                group = batches[st.group * cfg.grad_accum : (st.group + 1) * cfg.grad_accum]
                st.group += 1
                encoded_groups = [[train_set[i] for i in idx] for idx in group]
                n_labels = sum(e.n_completion for g in encoded_groups for e in g)
                step_loss = 0.0
                passes = []
                for items in encoded_groups:
                    # Interleaved shares keep every process busy even on a short last batch.
                    mine, scale = items[rank::world], float(world)
                    if not mine:  # fewer examples than processes: take part in the gradient sync with zero weight
                        mine, scale = items[:1], 0.0
                    # A packed row of long examples is trained in parts (MAX_PASS_TOKENS): same gradient, less memory.
                    passes += [(part, scale) for part in (packed_passes(mine, applied.prefix_sharing) if pack else [mine])]
                    st.tokens += sum(len(e.input_ids) for e in items)
                for m, (part, scale) in enumerate(passes):
                    multiple = applied.shape_multiple
                    tensors = (collate_packed(part, pad_id, multiple, applied.prefix_sharing) if pack
                               else collate(part, pad_id, multiple))
                    batch = {key: v.to(device) for key, v in tensors.items()}
                    sync = nullcontext() if acc is None or m == len(passes) - 1 else acc.no_sync(step_loss_module)
                    with sync:
                        with lm.autocast():
                            loss_sum, _ = step_loss_module(**batch)
                            # Normalise by the labelled tokens of the whole step on all processes, so the
                            # averaged gradient equals one process's gradient on the whole batch.
                            loss = loss_sum * (scale / max(n_labels, 1))
                            if method.extra_loss is not None and m == 0:
                                loss = loss + method.extra_loss(model)
                        loss.backward()
                    step_loss += float(loss_sum.detach()) * (scale > 0)
                    shared = int(tensors.get("prefix", 0)) * (len(part) - 1)
                    st.computed_tokens += (sum(len(e.input_ids) for e in part) - shared) * (scale > 0)
                if world > 1:
                    step_loss = _sum_across(acc, step_loss)
                if cfg.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                st.step += 1
                if method.on_step is not None:
                    method.on_step(model, st.step)
                optimizer.zero_grad(set_to_none=True)
                st.window_loss += step_loss
                st.window_tokens += n_labels
                if st.step % cfg.logging_steps == 0 or st.step == total_steps:
                    st.last_train_loss = st.window_loss / max(st.window_tokens, 1)
                    log.write(step=st.step, epoch=round(st.step / steps_per_epoch, 4), train_loss=st.last_train_loss,
                              lr=scheduler.get_last_lr()[0], tokens=st.tokens, seconds=round(elapsed(), 3))
                    st.window_loss, st.window_tokens = 0.0, 0
                loss_txt = f"loss {st.last_train_loss:.3f}" if st.last_train_loss is not None else ""
                progress.update(task, advance=1, info=f"{loss_txt}  {st.tokens / max(elapsed(), 1e-9):.0f} tok/s")
                if st.step % eval_every == 0 or st.step == total_steps:
                    validate()
                if saves and (st.step % checkpoint_every == 0 or st.step % eval_every == 0 or st.step == total_steps):
                    st.seconds, start = elapsed(), time.perf_counter()
                    save_checkpoint(checkpoint_dir, st, trainable_state(model), best_state, optimizer, scheduler)
                if st.step >= total_steps or st.stopped_early:
                    break
            else:
                st.epoch, st.group = st.epoch + 1, 0

    if best_state is not None:
        _copy_into(model, best_state)
    else:
        st.best_step = st.step
    model.eval()
    seconds = elapsed()
    return TrainResult(
        steps=st.step, epochs=round(st.step / steps_per_epoch, 4), seconds=round(seconds, 2), tokens=st.tokens,
        tokens_per_second=round(st.tokens / seconds, 1) if seconds > 0 else 0.0, computed_tokens=st.computed_tokens,
        peak_rss_mb=round(peak_rss_mb(), 1),
        best_step=st.best_step, best_val_loss=None if best_state is None else st.best_loss,
        stopped_early=st.stopped_early, final_train_loss=st.last_train_loss, history=log.rows,
        resumed_from=resumed_from, fast_path=applied.to_dict(),
    )


@torch.no_grad()
def _copy_into(model: Any, tensors: dict[str, torch.Tensor]) -> None:
    """Overwrite the model's parameters named in ``tensors`` (a checkpoint's or the best weights)."""
    for n, p in model.named_parameters():
        if n in tensors:
            p.copy_(tensors[n])


def _sum_across(acc: Any, value: float) -> float:
    """The sum of a number over all processes (for the logged loss)."""
    return float(acc.reduce(torch.tensor([value]), reduction="sum")[0])
