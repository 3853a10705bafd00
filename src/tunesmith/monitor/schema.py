"""The monitoring report as typed data (``report.json``): what ``tunesmith monitor`` writes and the UI reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["alert", "ok", "too little traffic", "not applicable"]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Signal(_Part):
    """One monitored signal.

    Attributes:
        name: Its key (``input_length``, ``input_domain``, ``label_shift``, ...).
        title: What it measures, in words.
        value: The effect size the threshold applies to (PSI, ROC-AUC, a share, an estimate).
        threshold: The configured threshold (None: reported, never alerts).
        p_value: The test's p-value, for test-based signals.
        interval: The value's interval, where it has one.
        count: Requests it is computed on.
        status: alert, ok, too little traffic, or not applicable (e.g. labels for a generation run).
        message: One sentence a person reads.
        detail: Figures a report shows beside it.
    """

    name: str
    title: str
    value: float | None = None
    threshold: float | None = None
    p_value: float | None = None
    interval: list[float] | None = None
    count: int = 0
    status: Status = "ok"
    message: str = ""
    detail: dict[str, Any] = Field(default_factory=dict)


class Window(_Part):
    """The signals of one time window (the report's time series)."""

    start: str
    requests: int
    median_words: float | None = None
    length_psi: float | None = None
    label_shift: float | None = None
    estimated_accuracy: list[float] | None = None
    """[estimate, low, high] where the answers carry probabilities."""
    positive_feedback: list[float] | None = None
    """[share, low, high] of rated answers rated positively."""
    rated: int = 0
    corrected: int = 0


class Example(_Part):
    """A live request worth a look: the most unlike training, the least confident, the rated down."""

    kind: Literal["unlike training", "least confident", "rated down", "corrected"]
    response_id: str
    created: str
    input: str
    answer: str
    probability: float | None = None
    note: str = ""


class MonitorReport(_Part):
    """What ``tunesmith monitor`` found: alerts first, then every signal, the windows and examples."""

    run_id: str
    alias: str | None
    task: str
    log: str
    since: str | None
    first: str | None
    last: str | None
    requests: int
    window: str
    alpha: float
    alerts: list[str]
    signals: list[Signal]
    windows: list[Window]
    examples: list[Example]
    webhook: str | None = None
    """What happened to the webhook POST: sent (status), failed (why), or None when none is configured or no alert."""
    generated: str

    def signal(self, name: str) -> Signal | None:
        """The signal called ``name``, if measured."""
        return next((s for s in self.signals if s.name == name), None)


def read_monitor_report(path: Path) -> MonitorReport:
    """Read a ``report.json`` written by ``tunesmith monitor``."""
    return MonitorReport.model_validate_json(path.read_text(encoding="utf-8"))
