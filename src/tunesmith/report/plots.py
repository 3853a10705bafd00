"""Plots that people would rather see than read."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display is needed or wanted
import matplotlib.pyplot as plt  # noqa: E402


def plot_loss(history: Sequence[dict[str, Any]], out: Path, title: str = "Loss") -> Path:
    """Plot training and validation loss against the optimiser step.

    Args:
        history: Rows of ``metrics.jsonl`` (``train_loss`` and/or ``val_loss`` with ``step``).
        out: The PNG to write.
        title: The plot title.

    Returns:
        ``out``.
    """
    train = [(r["step"], r["train_loss"]) for r in history if "train_loss" in r]
    val = [(r["step"], r["val_loss"]) for r in history if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        ax.plot(*zip(*train), label="training loss", color="#1f77b4")
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss", color="#d62728")
        best = min(val, key=lambda t: t[1])
        ax.annotate(f"best {best[1]:.3f}", best, textcoords="offset points", xytext=(-30, 12), fontsize=8)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss (completion tokens)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
