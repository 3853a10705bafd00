"""``tunesmith init``: write a commented project file and an example dataset for a task."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError
from tunesmith.tasks import TASKS, get_task

def _templates() -> Any:
    return resources.files("tunesmith") / "templates"


def render_project_file(task: str, name: str) -> str:
    """The commented ``tunesmith.yaml`` for a task's example."""
    spec = get_task(task)
    text = (_templates() / "tunesmith.yaml.tmpl").read_text(encoding="utf-8")
    return text.format(
        task=task, name=name, metric=spec.primary_metric,
        metric_choices="one of " + ", ".join([*spec.allowed_metrics, "loss", "perplexity"]),
        attribution=spec.attribution,
        system_prompt="null        # instruction for the model; null uses the task's default"
        + (" (lists the labels via {labels})" if task == "classification" else ""),
        **spec.preset,
    )


def init_project(folder: Path, task: str, force: bool = False) -> Path:
    """Create ``folder/tunesmith.yaml`` and ``folder/data/train.jsonl`` for ``task``.

    Args:
        folder: Project folder (created if missing).
        task: One of the supported tasks.
        force: Overwrite an existing project file.

    Returns:
        The path of the project file.

    Raises:
        UserError: Unknown task, or a project file exists and ``force`` is off.
    """
    if task not in TASKS:
        raise UserError(f"--task: unknown task '{task}' (choose from {', '.join(TASKS)})")
    project_file = folder / "tunesmith.yaml"
    if project_file.exists() and not force:
        raise UserError(f"{project_file} already exists (use --force to overwrite)")
    (folder / "data").mkdir(parents=True, exist_ok=True)
    src = _templates() / task
    for name in ("train.jsonl", "NOTICE.md"):
        with resources.as_file(src / name) as p:
            shutil.copyfile(p, folder / "data" / name)
    name = get_task(task).example_name
    project_file.write_text(render_project_file(task, name), encoding="utf-8")
    return project_file
