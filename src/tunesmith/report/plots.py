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
    if train:  # a marker on every point, so that a run of a single step still shows one
        ax.plot(*zip(*train), "." if len(train) > 1 else "o", linestyle="-", label="training loss", color="#1f77b4")
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


def plot_confusion(labels: Sequence[str], matrices: dict[str, Sequence[Sequence[int]]], out: Path) -> Path:
    """Confusion matrices side by side (rows: reference label, columns: predicted; last column: no label).

    Args:
        labels: The label set, in matrix order.
        matrices: Name (baseline, tuned) -> matrix of counts with ``len(labels) + 1`` columns.
        out: The PNG to write.

    Returns:
        ``out``.
    """
    n = len(matrices)
    size = max(4.0, 0.45 * len(labels) + 2.5)
    fig, axes = plt.subplots(1, n, figsize=(size * n, size), dpi=100, squeeze=False)
    for ax, (name, matrix) in zip(axes[0], matrices.items()):
        ax.imshow(matrix, cmap="Blues")
        ax.set_xticks(range(len(labels) + 1), [*labels, "(none)"], rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        for i, row in enumerate(matrix):
            for j, v in enumerate(row):
                if v:
                    ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                            color="white" if v > max(map(max, matrix)) / 2 else "black")
        ax.set_xlabel("predicted")
        ax.set_ylabel("reference")
        ax.set_title(f"{name}")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_calibration(calibration: dict[str, Any], out: Path) -> Path:
    """Reliability diagrams: accuracy against confidence per bin, one panel per model, the diagonal for reference.

    Args:
        calibration: The report's ``calibration`` section (model name -> its bins and ECE).
        out: The PNG to write.

    Returns:
        ``out``.
    """
    fig, axes = plt.subplots(1, len(calibration), figsize=(4.2 * len(calibration), 4), dpi=100, squeeze=False)
    for ax, (name, cal) in zip(axes[0], calibration.items()):
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
        bins = cal["bins"]
        ax.bar([(b["low"] + b["high"]) / 2 for b in bins], [b["accuracy"] for b in bins],
               width=[b["high"] - b["low"] for b in bins], edgecolor="black", alpha=0.7)
        for b in bins:
            ax.text((b["low"] + b["high"]) / 2, min(b["accuracy"] + 0.03, 0.97), str(b["count"]), ha="center", fontsize=7)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (probability of the chosen label)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{name}: ECE {cal['ece']:.3f} over {cal['count']}")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
