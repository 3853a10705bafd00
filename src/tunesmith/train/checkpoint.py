"""Resumable training checkpoints: trainable weights, best weights, optimiser, scheduler, RNG states, data position.

Each checkpoint is a folder ``step-NNNNNN`` beside a ``latest`` file naming the newest complete one;
the pointer is replaced atomically after the folder is fully written, so a process killed while
writing leaves the previous checkpoint usable.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tunesmith.errors import UserError

LATEST = "latest"


@dataclass
class LoopState:
    """Where the loop is, and what it has measured so far (everything but tensors).

    Attributes:
        step: Optimiser steps done.
        epoch: The epoch being trained.
        group: Index of the next accumulation group in that epoch's batch order.
        tokens: Non-padding tokens trained on.
        computed_tokens: Of those, the tokens this process computed (a shared prefix once per batch).
        seconds: Training wall time before this process.
        window_loss: Summed loss of the current logging window.
        window_tokens: Labelled tokens of the current logging window.
        last_train_loss: Mean loss of the last logging window.
        best_loss: Lowest validation loss seen (inf when none).
        best_step: The step that reached it.
        bad_evals: Validations without improvement since.
        stopped_early: Whether early stopping fired.
        history: Every row written to ``metrics.jsonl``.
    """

    step: int = 0
    epoch: int = 0
    group: int = 0
    tokens: int = 0
    computed_tokens: int = 0
    seconds: float = 0.0
    window_loss: float = 0.0
    window_tokens: int = 0
    last_train_loss: float | None = None
    best_loss: float = float("inf")
    best_step: int = 0
    bad_evals: int = 0
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save_checkpoint(root: Path, state: LoopState, trainable: dict[str, torch.Tensor],
                    best: dict[str, torch.Tensor] | None, optimizer: Any, scheduler: Any) -> Path:
    """Write a checkpoint folder, point ``latest`` at it, and remove older ones.

    Returns:
        The new checkpoint folder.
    """
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"step-{state.step:06d}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    save_file(trainable, str(folder / "trainable.safetensors"))
    if best is not None:
        save_file(best, str(folder / "best.safetensors"))
    # Optimiser and scheduler state are tensors, numbers and lists: safe to read back with weights_only.
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": _rng_state()},
               folder / "optimizer.pt")
    (folder / "state.json").write_text(json.dumps(asdict(state)))
    tmp = root / (LATEST + ".tmp")
    tmp.write_text(folder.name)
    os.replace(tmp, root / LATEST)
    for old in root.glob("step-*"):
        if old != folder:
            shutil.rmtree(old, ignore_errors=True)
    return folder


@dataclass
class Checkpoint:
    """A checkpoint read back from disk."""

    state: LoopState
    trainable: dict[str, torch.Tensor]
    best: dict[str, torch.Tensor] | None
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint folder under ``root``, or None."""
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    folder = root / pointer.read_text().strip()
    return folder if (folder / "state.json").is_file() else None


def load_checkpoint(folder: Path) -> Checkpoint:
    """Read a checkpoint folder.

    Raises:
        UserError: The folder is incomplete or unreadable.
    """
    try:
        state = LoopState(**json.loads((folder / "state.json").read_text()))
        rest = torch.load(folder / "optimizer.pt", weights_only=True)
        best = load_file(str(folder / "best.safetensors")) if (folder / "best.safetensors").is_file() else None
        return Checkpoint(state, load_file(str(folder / "trainable.safetensors")), best,
                          rest["optimizer"], rest["scheduler"], rest["rng"])
    except (OSError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise UserError(f"checkpoint {folder} cannot be read: {exc}") from exc


def restore_rng(rng: dict[str, Any]) -> None:
    """Put the random number generators back where the checkpoint left them."""
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
