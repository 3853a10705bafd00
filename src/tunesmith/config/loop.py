"""The project file's sections for the loop after deployment: ``monitor`` and ``retrain``.

Kept apart from :mod:`.schema` (which holds them in :class:`~tunesmith.config.schema.Config`) so
that neither file grows past reading length; the rules are the same: every default here, with
its docstring, and unknown keys are errors.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def window_seconds(text: str) -> float:
    """``30m``, ``6h``, ``1d``, ``2w`` as seconds.

    Raises:
        ValueError: Not a number followed by s, m, h, d or w.
    """
    match = _WINDOW.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a window such as 30m, 6h, 1d or 1w")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


class MonitorThresholds(_Section):
    """When a monitoring signal becomes an alert. A test-based signal alerts only when its test is significant
    at ``monitor.alpha`` and its effect is at least the size given here, so a large log does not alert on a
    shift too small to matter and a small one does not alert on noise."""

    length_psi: float | None = Field(0.2, gt=0)
    """Prompt length: population stability index against the training inputs (0.1 moderate, 0.25 large),
    with the KS test significant."""
    domain_auc: float | None = Field(0.7, gt=0.5, le=1)
    """Input drift: held-out ROC-AUC of a classifier telling live inputs from training inputs (0.5: they cannot
    be told apart), with its permutation test significant."""
    label_shift: float | None = Field(0.15, gt=0, le=1)
    """Predicted labels: total variation distance from the training labels' distribution (half the summed
    absolute differences of the shares), with the chi-squared test significant."""
    outside_labels: float | None = Field(0.05, ge=0, le=1)
    """Share of classification answers that are not one of the run's labels."""
    pii_rate: float | None = Field(0.05, ge=0, le=1)
    """Share of requests whose messages held personal data (scrubbed before logging)."""
    accuracy_drop: float | None = Field(0.1, gt=0, le=1)
    """Label-free accuracy estimate: alert when it falls more than this below the run's test accuracy."""
    negative_feedback: float | None = Field(0.25, ge=0, le=1)
    """Share of rated answers rated negatively (thumbs down, or 1-2 of 5): alert when its interval's lower end
    is above this."""
    corrected: float | None = Field(0.25, ge=0, le=1)
    """Share of answers users corrected: alert when its interval's lower end is above this."""
    empty_answers: float | None = Field(0.05, ge=0, le=1)
    """Other tasks: share of empty answers."""
    refusals: float | None = Field(0.1, ge=0, le=1)
    """Other tasks: share of answers that refuse ("I can't", "I'm sorry, but")."""
    near_duplicates_min: float | None = Field(None, ge=0, le=1)
    """Alert when fewer live inputs than this share nearly duplicate a training input (None: report only)."""


class MonitorConfig(_Section):
    """``tunesmith monitor``: live traffic from the request log against the served run's own training data."""

    run: str = "production"
    """The run (id, folder or alias) whose traffic is monitored and whose training split is the reference."""
    window: str = "1d"
    """Length of each window of the time series in the report: 30m, 6h, 1d, 1w."""
    min_requests: int = Field(30, ge=1)
    """Fewest requests a signal needs before it may alert (fewer: reported as too little traffic)."""
    alpha: float = Field(0.01, gt=0, lt=0.5)
    """Significance level of each drift test: its false-alarm rate on traffic that has not drifted."""
    max_reference: int = Field(2000, ge=50)
    """Training inputs the classifier test compares with at most (a seeded sample; the other signals use all)."""
    thresholds: MonitorThresholds = Field(default_factory=MonitorThresholds)
    """When each signal alerts."""
    webhook: str | None = None
    """URL that receives a JSON POST listing the alerts when there are any (e.g. a Slack or Teams workflow)."""
    webhook_token_env: str = "TUNESMITH_WEBHOOK_TOKEN"
    """Environment variable whose value, if set, is sent to the webhook as ``Authorization: Bearer``."""
    out: Path = Path("monitor")
    """Folder receiving report.md, report.html, report.json and the plots (relative to the project file)."""

    @field_validator("window")
    @classmethod
    def _window_parses(cls, value: str) -> str:
        window_seconds(value)
        return value


class GateConfig(_Section):
    """When a retrained candidate replaces production: the evaluator's own paired statistics on the same test sets."""

    fresh: Literal["better", "not_worse"] = "better"
    """On the fresh test set (held-out reviewed traffic): better = the candidate's primary metric is
    significantly higher (the interval of the paired difference above 0); not_worse = the interval's lower end
    above minus ``margin`` (to absorb new data without a required gain)."""
    frozen: Literal["better", "not_worse"] = "not_worse"
    """On the frozen test split of the production run: the same two choices."""
    margin: float = Field(0.02, ge=0, le=1)
    """Non-inferiority margin in units of the primary metric (0.02 = two points of accuracy)."""
    forgetting_veto: bool = True
    """Refuse a candidate whose forgetting check warns (general ability lost)."""
    fairness_veto: bool = True
    """Refuse a candidate with a fairness group below ``eval.fairness.min_ratio``."""


class RetrainConfig(_Section):
    """``tunesmith retrain``: the next data version, a candidate, and the gate that decides whether it goes live."""

    new_data: list[Path] = Field(default_factory=list)
    """Reviewed rows to add (``logs export`` then ``data review``): files in any data format; rows still marked
    needs_review are left out."""
    fresh_test_fraction: float = Field(0.3, gt=0, lt=1)
    """Share of the reviewed rows held out (seeded) as the fresh test set; the rest joins training."""
    continue_production: bool = False
    """Start the candidate from the production adapter (adapter.init_from) instead of a fresh one."""
    production: str = "production"
    """The alias (or run) the candidate competes with and, when it wins, takes over."""
    candidate_alias: str = "candidate"
    """The alias the candidate gets whatever the gate decides."""
    gate: GateConfig = Field(default_factory=GateConfig)
    """The promotion gate."""
