"""Timing a few real training steps on this machine, through the training loop itself.

A shared machine's speed changes from minute to minute, so a plan measures it rather than
trusting a constant: :func:`calibrate` runs ``train_adapter`` for a handful of optimiser steps
on examples of one representative length and reads each step's time from its ``on_log`` hook.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tunesmith.config import TrainConfig
from tunesmith.data.encode import Encoded
from tunesmith.models.adapters import Method
from tunesmith.models.load import LoadedModel
from tunesmith.fastpath.apply import fast_path
from tunesmith.train.loop import train_adapter
from tunesmith.train.loss import evaluate_loss


@dataclass(frozen=True)
class Calibration:
    """What the real steps measured.

    Attributes:
        rows: Examples per timed step.
        tokens: Non-padding tokens of each timed step (the warm-up step excluded).
        seconds: Wall time of each timed step.
        warmup_seconds: The first step, which pays for first-touch memory and is not used for the rate.
        warmup_tokens: Its non-padding tokens.
        eval_tokens: Tokens of the validation forward pass that was timed.
        eval_seconds: Its wall time.
        peak_rss_mib: Peak resident memory of this process after the steps.
    """

    rows: int
    tokens: list[int]
    seconds: list[float]
    warmup_seconds: float
    warmup_tokens: int
    eval_tokens: int
    eval_seconds: float
    peak_rss_mib: float

    def summary(self) -> dict[str, Any]:
        """Plain data for the plan's JSON."""
        return {"rows": self.rows, "tokens": self.tokens, "seconds": [round(s, 3) for s in self.seconds],
                "warmup_seconds": round(self.warmup_seconds, 3), "warmup_tokens": self.warmup_tokens,
                "eval_tokens": self.eval_tokens,
                "eval_seconds": round(self.eval_seconds, 3), "peak_rss_mib": round(self.peak_rss_mib, 1),
                "tokens_per_second": round(sum(self.tokens) / sum(self.seconds), 1)}


def matmul_gflops(size: int = 1024, seconds: float = 0.5, dtype: torch.dtype = torch.float32) -> float:
    """Matrix-multiplication speed of this CPU in GFLOP/s, with PyTorch's current thread count.

    Args:
        size: Side of the square matrices multiplied.
        seconds: How long to keep multiplying after one warm-up product.
        dtype: The precision multiplied in (the one training computes in).
    """
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        torch.mm(a, b)
        n += 1
    return 2 * size**3 * n / elapsed / 1e9


def representative(encoded: Sequence[Encoded], width: int, count: int) -> list[Encoded]:
    """The ``count`` examples whose length is closest to ``width``, so every batch of them has about that width."""
    order = sorted(range(len(encoded)), key=lambda i: (abs(len(encoded[i].input_ids) - width), i))
    return [encoded[i] for i in order[:count]]


def calibrate(lm: LoadedModel, examples: Sequence[Encoded], cfg: TrainConfig, method: Method, *,
              steps: int, seed: int) -> Calibration:
    """Run ``steps`` optimiser steps of ``cfg.batch_size`` examples through ``train_adapter`` and time each.

    The first step is a warm-up; the others are the measurement. The model's trainable weights
    are changed, so ``lm`` should be a throwaway copy. Then one validation batch is timed.

    Args:
        lm: The base model with the method's trainable parameters applied.
        examples: ``steps * cfg.batch_size`` encoded examples of similar length (see :func:`representative`).
        cfg: The run's training settings; batch size, threads, clipping and learning rate are kept.
        method: The training method (its per-step hooks and regularisers cost time too).
        steps: Optimiser steps to run, warm-up included (at least 2).
        seed: Seed of the data order.

    Raises:
        ValueError: Fewer than two steps, or not enough examples for them.
    """
    if steps < 2 or len(examples) < steps * cfg.batch_size:
        raise ValueError(f"calibration needs at least 2 steps of {cfg.batch_size} examples; got {len(examples)} examples")
    # One step per batch, no validation, every step logged: the log's times are the measurement.
    short = cfg.model_copy(update={"max_steps": steps, "epochs": 1, "grad_accum": 1, "logging_steps": 1,
                                   "eval_every": None, "early_stopping_patience": None})
    rows: list[dict[str, Any]] = []
    result = train_adapter(lm, list(examples[: steps * cfg.batch_size]), [], short, seed=seed, method=method,
                           on_log=lambda row: rows.append(row) if "train_loss" in row else None)
    times = [0.0] + [r["seconds"] for r in rows]
    tokens = [0] + [r["tokens"] for r in rows]
    step_seconds = [b - a for a, b in zip(times, times[1:])]
    step_tokens = [b - a for a, b in zip(tokens, tokens[1:])]
    batch = list(examples[: cfg.batch_size])
    with fast_path(lm, cfg.fast_path):  # validations run during training, on the fast path
        start = time.perf_counter()
        evaluate_loss(lm.model, batch, lm.tokenizer.pad_token_id, cfg.batch_size, lm.device, lm.autocast)
        eval_seconds = time.perf_counter() - start
    return Calibration(rows=cfg.batch_size, tokens=step_tokens[1:], seconds=step_seconds[1:],
                       warmup_seconds=step_seconds[0], warmup_tokens=step_tokens[0], eval_tokens=sum(len(e.input_ids) for e in batch),
                       eval_seconds=eval_seconds,
                       # training's own peak: after it, the fast path gives the weights their fp32 storage back
                       peak_rss_mib=result.peak_rss_mb)
