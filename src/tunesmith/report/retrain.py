"""What ``tunesmith retrain`` decided and why, as typed data (``retrain.json``) and as markdown (``retrain.md``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tunesmith.evaluate.intervals import PairedComparison
from tunesmith.report.markdown import render_markdown
from tunesmith.report.sections import Bullets, Section, Table, Text


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SetComparison(_Part):
    """Candidate against production on one test set (same examples, paired)."""

    name: str
    """``fresh`` (held-out reviewed traffic) or ``frozen`` (the production run's test split)."""
    metric: str
    count: int
    production: float
    production_interval: list[float | None]
    candidate: float
    candidate_interval: list[float | None]
    difference: float
    difference_interval: list[float | None]
    p_value: float
    test: str
    requirement: str

    @classmethod
    def of(cls, name: str, c: PairedComparison, requirement: str) -> SetComparison:
        return cls(name=name, metric=c.metric, count=c.count, production=c.baseline.value,
                   production_interval=[c.baseline.low, c.baseline.high], candidate=c.tuned.value,
                   candidate_interval=[c.tuned.low, c.tuned.high], difference=c.diff.value,
                   difference_interval=[c.diff.low, c.diff.high], p_value=c.p_value, test=c.test,
                   requirement=requirement)


class RetrainReport(_Part):
    """One retraining: the data version, the candidate, both models on both test sets, the gate, the aliases."""

    production: str
    candidate: str
    data_version: str
    data_folder: str
    changes: dict[str, Any]
    comparisons: list[SetComparison]
    checks: list[dict[str, Any]]
    promoted: bool
    reasons: list[str] = Field(default_factory=list)
    aliases: dict[str, str] = Field(default_factory=dict)
    generated: str


def retrain_sections(r: RetrainReport) -> list[Section]:
    """The report: the decision first, then the comparisons, the checks and what the data version changed."""
    verdict = (f"**Promoted**: {r.candidate} is now production (was {r.production})" if r.promoted else
               f"**Not promoted**: {r.candidate} stays candidate; production stays {r.production}")
    head = Section(f"Retraining {r.production}", level=1, blocks=[Text(verdict, "met" if r.promoted else "not met")])
    if r.reasons:
        head.blocks.append(Bullets(r.reasons))

    def iv(pair: list[float | None], signed: bool = False) -> str:
        if pair[0] is None or pair[1] is None:
            return "none"
        f = "{:+.4f}" if signed else "{:.4f}"
        return f"[{f.format(pair[0])}, {f.format(pair[1])}]"

    rows = [[c.name, c.requirement, c.count, f"{c.production:.4f} {iv(c.production_interval)}",
             f"{c.candidate:.4f} {iv(c.candidate_interval)}", f"{c.difference:+.4f} {iv(c.difference_interval, True)}",
             f"{c.p_value:.3g}", c.test] for c in r.comparisons]
    metric = r.comparisons[0].metric if r.comparisons else "metric"
    table = Section("Candidate against production, on the same examples", [Table(
        ["test set", "gate asks", "examples", f"production {metric}", f"candidate {metric}", "difference", "p", "test"],
        rows)])
    checks = Section("Gate", [Table(["check", "passed", "reason"], [[c["name"], "yes" if c["passed"] else "no",
                                                                     c["reason"]] for c in r.checks])])
    ch = r.changes
    data = Section("Data version", [Text(f"`{r.data_version[:12]}` in `{r.data_folder}`", "muted"), Bullets([
        f"reviewed rows read: {ch.get('rows_read')}, usable {ch.get('usable')} (set aside on reading "
        f"{ch.get('set_aside_on_reading')})",
        f"held out as the fresh test set: {ch.get('held_out_as_fresh_test')}",
        f"joined training: {ch.get('joined_training')} (training {ch.get('training', {}).get('before')} -> "
        f"{ch.get('training', {}).get('after')})",
        f"set aside by the checks: {ch.get('set_aside') or 'none'}",
        f"new labels: {', '.join(ch.get('new_labels') or []) or 'none'}",
        f"frozen test split: {ch.get('frozen_test')} rows, unchanged"])])
    return [head, table, checks, data]


def write_retrain_report(report: RetrainReport, json_path: Path, md_path: Path) -> None:
    """Write ``retrain.json`` and ``retrain.md``."""
    json_path.write_text(report.model_dump_json(indent=2), encoding="utf-8")
    md_path.write_text(render_markdown(retrain_sections(report)), encoding="utf-8")


def read_retrain_report(path: Path) -> RetrainReport:
    """Read a ``retrain.json``."""
    return RetrainReport.model_validate_json(path.read_text(encoding="utf-8"))
