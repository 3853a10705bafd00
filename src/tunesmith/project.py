"""``tunesmith init``: write a commented project file and an example dataset for a task."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from tunesmith.config import DEFAULT_METRIC, TASKS
from tunesmith.evaluate.metrics import TASK_METRICS
from tunesmith.errors import UserError

#: Settings each task's example starts from, chosen so the example runs in minutes on two CPU cores.
PRESETS: dict[str, dict[str, Any]] = {
    "classification": {"target": 0.8, "max_seq_len": 160, "epochs": 1, "max_steps": "null", "batch_size": 16,
                       "lr": 0.002, "eval_every": 10, "logging_steps": 1, "max_new_tokens": 12},
    "qa": {"target": "null", "max_seq_len": 256, "epochs": 3, "max_steps": "null", "batch_size": 8, "lr": 0.001,
           "eval_every": "null", "logging_steps": 5, "max_new_tokens": 24},
    "summarization": {"target": "null", "max_seq_len": 256, "epochs": 3, "max_steps": "null", "batch_size": 8, "lr": 0.001,
                      "eval_every": "null", "logging_steps": 5, "max_new_tokens": 48},
    "generation": {"target": "null", "max_seq_len": 192, "epochs": 3, "max_steps": "null", "batch_size": 8, "lr": 0.001,
                   "eval_every": "null", "logging_steps": 5, "max_new_tokens": 48},
}

ATTRIBUTION = {
    "classification": "# Example data: 800 messages of 8 intents from banking77 by PolyAI (Casanueva et al., 2020),\n"
                      "# licensed CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/); see data/NOTICE.md.\n",
}


def _templates() -> Any:
    return resources.files("tunesmith") / "templates"


def render_project_file(task: str, name: str) -> str:
    """The commented ``tunesmith.yaml`` for a task's example."""
    preset = PRESETS[task]
    text = (_templates() / "tunesmith.yaml.tmpl").read_text(encoding="utf-8")
    return text.format(
        task=task, name=name, metric=DEFAULT_METRIC[task],
        metric_choices="one of " + ", ".join([*TASK_METRICS[task], "loss", "perplexity"]),
        attribution=ATTRIBUTION.get(task, ""),
        system_prompt="null        # instruction for the model; null uses the task's default"
        + (" (lists the labels via {labels})" if task == "classification" else ""),
        **preset,
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
    name = "banking77-intents" if task == "classification" else f"{task}-example"
    project_file.write_text(render_project_file(task, name), encoding="utf-8")
    return project_file
