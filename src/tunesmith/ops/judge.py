"""LLM-as-judge on a run's test outputs, added to the run's reports."""

from __future__ import annotations

from typing import Any

from tunesmith.config import Config
from tunesmith.console import console
from tunesmith.data.io import read_jsonl, write_jsonl
from tunesmith.errors import UserError
from tunesmith.evaluate.judge import judge_pairwise, judge_rubric, summarize_judge
from tunesmith.inference.clients import Generator
from tunesmith.runs.folder import RunPaths
from tunesmith.steps.report import add_report_section


def judge_run(run: RunPaths, cfg: Config, judge: Generator, *, rubric: bool, pairwise: bool,
              max_items: int | None) -> dict[str, Any]:
    """LLM-as-judge on a run's test outputs; every judgement goes to ``judge.jsonl``, the summary to the reports.

    Raises:
        UserError: Pairwise judging without baseline predictions.
    """
    tuned = read_jsonl(run.predictions / "tuned.jsonl")[:max_items]
    has_base = (run.predictions / "baseline.jsonl").is_file()
    if pairwise and not has_base:
        raise UserError(f"run {run.id} has no baseline predictions to compare with (eval.baseline was off)")
    baseline = read_jsonl(run.predictions / "baseline.jsonl")[:max_items] if has_base else []
    criteria = cfg.eval.judge_criteria
    with console.status(f"Judging {len(tuned)} outputs with {judge.name}"):
        scored = judge_rubric(judge, tuned, criteria, cfg.project.seed) if rubric else None
        pairs = judge_pairwise(judge, baseline, tuned, cfg.project.seed) if pairwise else None
    write_jsonl(run.root / "judge.jsonl", [{"kind": "rubric", **r} for r in scored or []] +
                [{"kind": "pairwise", **p} for p in pairs or []])
    ratings = run.root / "review" / "ratings.jsonl"
    human = read_jsonl(ratings) if ratings.is_file() else None
    summary = {"judge": judge.name, "items": len(tuned), "criteria": criteria,
               **summarize_judge(scored, pairs, criteria, human)}
    add_report_section(run, cfg, "llm_judge", summary)
    return summary
