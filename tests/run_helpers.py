"""Small finished runs of the tiny model, shared by the tracking, registry and comparison tests."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import write_classification_data
from tunesmith.config import load_config
from tunesmith.recipes.finetune import run_pipeline
from tunesmith.runs.folder import RunPaths


def make_tiny_project(folder: Path, model_dir: Path) -> Path:
    """The ``tiny_project`` fixture's project in ``folder``, without the slow forgetting check; returns its file."""
    write_classification_data(folder / "data" / "train.jsonl")
    project = folder / "tunesmith.yaml"
    project.write_text(
        "objective: {task: classification, target: 0.0}\n"
        "data: {dedup: {near: false}}\n"
        f"model: {{base: '{model_dir}', max_seq_len: 96}}\n"
        "adapter: {r: 4, alpha: 8}\n"
        "train: {epochs: 1, max_steps: 3, batch_size: 8, lr: 0.01, eval_every: 2, logging_steps: 1}\n"
        "eval: {max_new_tokens: 4, batch_size: 8, forgetting: {enabled: false}}\n"
    )
    return project


def run_tiny(project: Path, *overrides: str, **kwargs) -> RunPaths:
    """Run the tiny project with ``--set``-style overrides."""
    cfg, base = load_config(project, list(overrides))
    return run_pipeline(cfg, base, **kwargs)
