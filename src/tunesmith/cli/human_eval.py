"""``tunesmith human-eval``: blind human A/B evaluation of a run's baseline and tuned outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tunesmith.cli.common import JsonOpt, RunOpt, RunsDirOpt, app, emit, handle_errors, lazy, load_run
from tunesmith.console import console

human_eval_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Blind human A/B evaluation of a run's baseline and tuned outputs.")
app.add_typer(human_eval_app, name="human-eval")
# The group's former name, kept working for scripts written against it (hidden from --help).
app.add_typer(human_eval_app, name="review", hidden=True)


@human_eval_app.command("export")
@handle_errors
def human_export(
    run: RunOpt,
    runs_dir: RunsDirOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the shuffling and the A/B sides.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Write a blind, shuffled side-by-side sheet (CSV and JSONL) of a run's outputs; the key is kept apart.

    Give each rater a copy of the sheet (one file per rater, named after them); they fill the
    1-5 rubric columns for A and B and the preference (A, B or tie).
    """
    run_paths, _, _ = load_run(run, runs_dir)
    sheet_csv, sheet_jsonl, key = lazy("tunesmith.ops.human_eval").export_human_review(run_paths, seed)
    if as_json:
        emit({"csv": str(sheet_csv), "jsonl": str(sheet_jsonl), "key": str(key)})
        return
    console.print(f"Sheet: {sheet_csv} (and {sheet_jsonl.name}); key, not for raters: {key}")


@human_eval_app.command("import")
@handle_errors
def human_import(
    sheets: Annotated[list[Path], typer.Argument(help="Rated sheets, one per rater (CSV or JSONL).")],
    run: RunOpt,
    runs_dir: RunsDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Un-blind rated sheets: scores and win rate with intervals, inter-rater agreement; added to the run's report."""
    run_paths, cfg, _ = load_run(run, runs_dir)
    summary = lazy("tunesmith.ops.human_eval").import_human_review(run_paths, cfg, sheets)
    if as_json:
        emit(summary)
        return
    win = summary["win_rate"]
    console.print(f"{len(summary['raters'])} raters, {summary['items']} items: tuned wins {win['tuned_wins']}, "
                  f"baseline wins {win['baseline_wins']}, ties {win['ties']}; agreement {summary['agreement']}")
    console.print(f"Report updated: {run_paths.report_html}")
