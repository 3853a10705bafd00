"""The schema of ``report.json``: what the recipe writes and every reader (CLI, run store, sweeps,
trackers, renderers, the coming server and web UI) reads, as one typed, versioned model.

Version 1 is what tunesmith wrote before the schema existed (no ``schema_version`` key and no
``versions``); it has the same fields and loads as is. A report written by a newer tunesmith than
this one is refused with a clear message rather than half-read. Version 3 adds how each interval
was computed (``method``, and a paired comparison's ``test``, ``count`` and ``smallest_p``) and
``min_test_examples`` and ``calibration``; earlier intervals were all bootstraps and load as such. Sections whose shape belongs to
the module that computes them (slices, error analysis, fairness, forgetting, judge, human review)
are kept as that module's JSON; the fields every reader relies on are typed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tunesmith.errors import UserError
# The evaluation's own records, validated as they are (pydantic reads dataclasses).
from tunesmith.evaluate.intervals import Interval, PairedComparison

#: The version this tunesmith writes.
SCHEMA_VERSION = 3


class _Part(BaseModel):
    # A part may carry more than is typed here (what a computing module adds); readers use the typed fields.
    model_config = ConfigDict(extra="allow")


class Objective(_Part):
    """The run's task, its primary metric and target."""

    task: str
    metric: str
    target: float | None = None
    higher_is_better: bool = True


class MetricChange(_Part):
    """One metric before and after tuning."""

    baseline: float | None = None
    tuned: float
    abs_change: float | None = None
    rel_change: float | None = None
    higher_is_better: bool = True


class ModelInfo(_Part):
    """The base model and where it ran."""

    base: str
    path: str
    device: str
    precision: str


class Evaluation(_Part):
    """One model's test-split metrics."""

    metrics: dict[str, float]
    seconds: float


class DataSummary(_Part):
    """Split sizes, format, labels and hashes of the run's data (``accounting``: where every row read went)."""

    train: int
    validation: int
    test: int
    format: str
    labels: list[str] | None = None
    data_hash: str | None = None
    accounting: dict[str, Any] | None = None
    tasks: dict[str, dict[str, Any]] | None = None


class TrainSummary(_Part):
    """What training measured (:class:`tunesmith.train.loop.TrainResult` without its history)."""

    steps: int
    epochs: float
    seconds: float
    tokens: int
    tokens_per_second: float
    computed_tokens: int = 0
    peak_rss_mb: float
    best_step: int
    best_val_loss: float | None = None
    stopped_early: bool = False
    final_train_loss: float | None = None
    resumed_from: int | None = None
    fast_path: dict[str, Any] = Field(default_factory=dict)


class RunReport(BaseModel):
    """``report.json``."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    run_id: str
    project: str
    objective: Objective
    verdict: Literal["met", "not met", "inconclusive"]
    verdict_reason: str
    interval: Interval | None = None
    model: ModelInfo
    adapter: dict[str, Any]
    data: DataSummary
    baseline: Evaluation | None = None
    tuned: Evaluation
    comparison: dict[str, MetricChange]
    significance: dict[str, PairedComparison] = Field(default_factory=dict)
    slices: dict[str, Any] = Field(default_factory=dict)
    per_task: list[dict[str, Any]] | None = None
    errors: dict[str, Any] | None = None
    confusion: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    """Classification with answers constrained to the labels: per model, the expected calibration error, the
    reliability diagram's bins and how often the free answer differed (:mod:`tunesmith.evaluate.calibration`)."""
    train: TrainSummary | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    fairness: dict[str, Any] | None = None
    forgetting: dict[str, Any] | None = None
    human_review: dict[str, Any] | None = None
    llm_judge: dict[str, Any] | None = None
    versions: dict[str, str | None] | None = None
    """Python's and the recorded libraries' versions (:func:`tunesmith.versions.library_versions`)."""
    min_test_examples: int = 30
    """``eval.min_test_examples`` of the run: below it the report says the test set is small."""

    def primary(self, which: Literal["baseline", "tuned"] = "tuned") -> float | None:
        """The primary metric of the baseline or the tuned model."""
        part = self.tuned if which == "tuned" else self.baseline
        return None if part is None else part.metrics.get(self.objective.metric)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, exclude_none=False)


def read_report(path: Path) -> RunReport:
    """Read and check a ``report.json`` (any version up to :data:`SCHEMA_VERSION`).

    Raises:
        UserError: The file is not valid JSON, is of a newer schema version, or does not fit the schema.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read the report ({exc})") from exc
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise UserError(f"{path}: report schema version {version} is newer than this tunesmith reads "
                        f"({SCHEMA_VERSION}); upgrade tunesmith")
    data["schema_version"] = version
    try:
        return RunReport.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserError(f"{path}: report field {where}: {first['msg']}") from exc


def read_report_if_any(path: Path) -> RunReport | None:
    """The report at ``path``, or None where there is none yet or it cannot be read (a running or failed run)."""
    if not path.is_file():
        return None
    try:
        return read_report(path)
    except UserError:
        return None


def write_report_file(path: Path, report: RunReport) -> None:
    """Write ``report`` as ``report.json`` (atomically: a reader never sees half a file)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report.model_dump(mode="json"), indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
