"""The task registry: everything tunesmith knows about a kind of task, in one entry.

A task type decides the metrics a run reports and may be judged by, the per-example score that
ranks examples in slices and error analysis, the system prompt a dataset gets unless it sets its
own, and the settings its example project (``tunesmith init --task``) starts from. Adding a task
means one :func:`register_task` call here (and its example data in ``templates/<task>/``).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from tunesmith.errors import ConfigError


@dataclass(frozen=True)
class TaskType:
    """One kind of task.

    Attributes:
        name: Registry key, the value of ``objective.task``.
        summary: One line on what the model does.
        metrics: The metrics every run of this task reports, in order (names in
            :data:`tunesmith.evaluate.metrics.METRICS`).
        primary_metric: The metric the verdict uses unless ``objective.metric`` names another.
        example_score: The per-example metric that ranks test examples (slices, error analysis).
        system_prompt: The system message unless ``data.system_prompt`` is set (``{labels}``
            expands to the label list); None for none.
        preset: Settings the example project file starts from.
        example_name: The example project's name.
        attribution: A comment the example's project file carries about its data.
        also: Further metrics ``objective.metric`` may name for this task.
    """

    name: str
    summary: str
    metrics: tuple[str, ...]
    primary_metric: str
    example_score: str
    system_prompt: str | None
    preset: dict[str, Any]
    example_name: str
    attribution: str = ""
    also: tuple[str, ...] = field(default=())

    @property
    def allowed_metrics(self) -> tuple[str, ...]:
        """Every metric that may judge this task (loss and perplexity apply to all)."""
        return (*self.metrics, *self.also)


TASKS: dict[str, TaskType] = {}


def register_task(task: TaskType) -> TaskType:
    """Add a task type to the registry.

    Raises:
        ValueError: The name is taken, or the primary metric is not among its metrics.
    """
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} is already registered")
    if task.primary_metric not in task.metrics or task.example_score not in task.allowed_metrics:
        raise ValueError(f"task {task.name!r}: its primary metric and example score must be among its metrics")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> TaskType:
    """The registered task type ``name``.

    Raises:
        ConfigError: No such task (the message names the nearest one).
    """
    if name not in TASKS:
        near = difflib.get_close_matches(name, list(TASKS), n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise ConfigError(f"objective.task: unknown task '{name}'{hint} (available: {', '.join(TASKS)})")
    return TASKS[name]


_ROUGE = ("rouge1", "rouge2", "rougeL", "rougeLsum")
#: What the qa, summarisation and generation examples start from (their lengths differ).
_GENERATIVE_PRESET = {"target": "null", "epochs": 3, "max_steps": "null", "batch_size": 8, "lr": 0.001,
                      "eval_every": "null", "logging_steps": 5}

register_task(TaskType(
    name="classification", summary="Assign one label from a fixed set to each input.",
    metrics=("accuracy", "macro_f1", "precision_macro", "recall_macro", "micro_f1"),
    also=("precision_micro", "recall_micro"), primary_metric="accuracy", example_score="accuracy",
    system_prompt="Classify the message. Answer with one label only, from: {labels}.",
    preset={"target": 0.8, "max_seq_len": 160, "epochs": 1, "max_steps": "null", "batch_size": 16, "lr": 0.002,
            "eval_every": 10, "logging_steps": 1, "max_new_tokens": 12},
    example_name="banking77-intents",
    attribution="# Example data: 800 messages of 8 intents from banking77 by PolyAI (Casanueva et al., 2020),\n"
                "# licensed CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/); see data/NOTICE.md.\n"))

register_task(TaskType(
    name="qa", summary="Answer a question, usually from a given context.",
    metrics=("exact_match", "token_f1"), also=_ROUGE, primary_metric="token_f1", example_score="token_f1",
    system_prompt="Answer the question from the context. Reply with the shortest exact answer only.",
    preset={**_GENERATIVE_PRESET, "max_seq_len": 256, "max_new_tokens": 24},
    example_name="qa-example"))

register_task(TaskType(
    name="summarization", summary="Condense a text.",
    metrics=(*_ROUGE, "bleu", "chrf"), primary_metric="rougeL", example_score="rougeL",
    system_prompt="Summarise the text in one short sentence.",
    preset={**_GENERATIVE_PRESET, "max_seq_len": 256, "max_new_tokens": 48},
    example_name="summarization-example"))

register_task(TaskType(
    name="generation", summary="Produce free text (or JSON) from an instruction.",
    metrics=(*_ROUGE, "bleu", "chrf"), also=("exact_match", "token_f1", "json_valid", "json_field_accuracy"),
    primary_metric="rougeL", example_score="rougeL", system_prompt=None,
    preset={**_GENERATIVE_PRESET, "max_seq_len": 192, "max_new_tokens": 48},
    example_name="generation-example"))
