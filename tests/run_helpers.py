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


def minimal_report(**fields):
    """A valid :class:`~tunesmith.report.schema.RunReport` with the fields every report has, and ``fields``."""
    from tunesmith.report.schema import RunReport

    base = {"run_id": "20260101-000000-classification", "project": "p",
            "objective": {"task": "classification", "metric": "accuracy", "target": None},
            "verdict": "met", "verdict_reason": "because", "model": {"base": "m", "path": "/m", "device": "cpu",
                                                                    "precision": "fp32"},
            "adapter": {"method": "lora", "r": 8, "alpha": 16}, "data": {"train": 8, "validation": 1, "test": 2,
                                                                         "format": "text_label"},
            "tuned": {"metrics": {"accuracy": 0.75}, "seconds": 1.0},
            "comparison": {"accuracy": {"tuned": 0.75}}}
    return RunReport.model_validate({**base, **fields})
