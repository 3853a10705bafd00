"""Blind human evaluation of a run's outputs: the A/B sheet out, the raters' sheets back into the run's reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunesmith.config import Config
from tunesmith.data.io import write_jsonl
from tunesmith.errors import UserError
from tunesmith.evaluate.human_eval import export_review, read_ratings, summarize
from tunesmith.runs.folder import RunPaths
from tunesmith.steps.report import add_report_section


def export_human_review(run: RunPaths, seed: int) -> tuple[Path, Path, Path]:
    """Write the blind review sheet of a run's baseline and tuned outputs into ``run/review/``.

    Raises:
        UserError: The run has no baseline predictions to compare with.
    """
    if not (run.predictions / "baseline.jsonl").is_file():
        raise UserError(f"run {run.id} has no baseline predictions (eval.baseline was off)")
    return export_review(run.predictions / "baseline.jsonl", run.predictions / "tuned.jsonl", run.root / "review", seed=seed)


def import_human_review(run: RunPaths, cfg: Config, sheets: list[Path]) -> dict[str, Any]:
    """Un-blind raters' sheets, summarise them, and add the result to the run's reports.

    Raises:
        UserError: The run has no review key (export first), or a sheet is invalid.
    """
    key = run.root / "review" / "review_key.json"
    if not key.is_file():
        raise UserError(f"run {run.id} has no review key: run `tunesmith human-eval export --run {run.id}` first")
    criteria = json.loads(key.read_text())["criteria"]
    ratings = read_ratings(sheets, key)
    write_jsonl(run.root / "review" / "ratings.jsonl", ratings)
    summary = summarize(ratings, criteria, seed=cfg.project.seed)
    add_report_section(run, cfg, "human_review", summary)
    return summary
