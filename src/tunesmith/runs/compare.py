"""Runs side by side: the config keys that differ, the key figures, and every run's loss curves in one plot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import yaml

from tunesmith.config import flatten_config, load_config
from tunesmith.errors import UserError
from tunesmith.report.schema import read_report_if_any
from tunesmith.runs.folder import RunPaths

matplotlib.use("Agg")  # files only; no display is needed or wanted
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

PLOT_NAME = "loss_curves.png"
JSON_NAME = "comparison.json"
#: The figures compared for every run, in display order.
FIGURES = ("status", "verdict", "metric", "baseline", "tuned", "target", "final_train_loss", "best_val_loss",
           "best_step", "steps", "tokens_per_second", "peak_rss_mb", "train_seconds", "total_seconds", "data_hash")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def read_history(run: RunPaths) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl`` (none when training never started); a torn last line is skipped."""
    if not run.metrics.is_file():
        return []
    rows = []
    for line in run.metrics.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def run_figures(run: RunPaths) -> dict[str, Any]:
    """The key figures of one run, from its ``status.json`` and ``report.json`` (None where not measured)."""
    report, status = read_report_if_any(run.report_json), _read_json(run.status)
    train = report.train if report is not None else None
    return {
        "status": status.get("status"), "verdict": report.verdict if report else None,
        "metric": report.objective.metric if report else None,
        "baseline": report.primary("baseline") if report else None, "tuned": report.primary() if report else None,
        "target": report.objective.target if report else None,
        "final_train_loss": train.final_train_loss if train else None,
        "best_val_loss": train.best_val_loss if train else None,
        "best_step": train.best_step if train else None, "steps": train.steps if train else None,
        "tokens_per_second": train.tokens_per_second if train else None,
        "peak_rss_mb": train.peak_rss_mb if train else None, "train_seconds": train.seconds if train else None,
        "total_seconds": round(sum(report.timings.values()), 2) if report and report.timings else None,
        "data_hash": report.data.data_hash if report else None,
    }


def config_differences(configs: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Dotted config keys whose values are not the same in every config, with each config's value (None: absent).

    A mapping that is empty in one config and has keys in another (``data.columns``) is told by its
    inner keys alone, not also as a key of its own.
    """
    flat = [flatten_config(c) for c in configs]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    differ = {k: [f.get(k) for f in flat] for k in keys if any(f.get(k) != flat[0].get(k) for f in flat)}
    return {k: v for k, v in differ.items()
            if not (all(x in ({}, None) for x in v) and any(o.startswith(k + ".") for o in differ))}


def full_config(run: RunPaths) -> dict[str, Any]:
    """A run's config with every default filled in (so a key an older run's file lacks is not a difference)."""
    try:
        return load_config(run.config, stored=True)[0].model_dump(mode="json")
    except UserError:
        return yaml.safe_load(run.config.read_text(encoding="utf-8")) or {}


def plot_loss_curves(histories: dict[str, Sequence[dict[str, Any]]], out: Path, title: str = "Loss curves") -> Path:
    """Training and validation loss of several runs against the optimiser step, one colour per run.

    Args:
        histories: Run label -> rows of its ``metrics.jsonl``.
        out: The PNG to write.
        title: The figure's title.

    Returns:
        ``out``.
    """
    fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110, sharey=True)
    colours = plt.get_cmap("tab10")
    for i, (label, rows) in enumerate(histories.items()):
        colour = colours(i % 10)
        train = [(r["step"], r["train_loss"]) for r in rows if "train_loss" in r]
        val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
        if train:
            ax_train.plot(*zip(*train), label=label, color=colour)
        if val:
            ax_val.plot(*zip(*val), "o-", label=label, color=colour)
    for ax, name in ((ax_train, "training loss"), (ax_val, "validation loss")):
        ax.set_title(name)
        ax.set_xlabel("optimiser step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="grey")
    ax_train.set_ylabel("loss (completion tokens)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def _labels(runs: Sequence[RunPaths]) -> list[str]:
    ids = [r.id for r in runs]
    # Runs from different runs folders may share an id; their paths tell them apart.
    return ids if len(set(ids)) == len(ids) else [str(r.root) for r in runs]


def compare_runs(runs: Sequence[RunPaths], out_dir: Path) -> dict[str, Any]:
    """Compare runs: differing config keys, key figures, and a PNG of all their loss curves.

    Writes ``loss_curves.png`` and ``comparison.json`` into ``out_dir``.

    Args:
        runs: Two or more run folders.
        out_dir: Where the plot and the JSON go (created).

    Returns:
        ``runs`` (label and path of each), ``config`` (dotted key -> one value per run, differing
        keys only), ``figures`` (name -> one value per run), ``plot`` and ``json`` (the files written).

    Raises:
        UserError: Fewer than two runs, or the same run twice.
    """
    if len(runs) < 2:
        raise UserError("compare needs at least two runs")
    if len({r.root.resolve() for r in runs}) < len(runs):
        raise UserError("compare: the same run is given twice")
    labels = _labels(runs)
    configs = [full_config(r) for r in runs]
    figures = [run_figures(r) for r in runs]
    out_dir.mkdir(parents=True, exist_ok=True)
    plot = plot_loss_curves({label: read_history(r) for label, r in zip(labels, runs)}, out_dir / PLOT_NAME,
                            title="Loss curves: " + " vs ".join(r.id for r in runs))
    result = {
        "runs": [{"label": label, "path": str(r.root)} for label, r in zip(labels, runs)],
        "config": config_differences(configs),
        "figures": {name: [f[name] for f in figures] for name in FIGURES},
        "plot": str(plot),
        "json": str(out_dir / JSON_NAME),
    }
    (out_dir / JSON_NAME).write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    return result
