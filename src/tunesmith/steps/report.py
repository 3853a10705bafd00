"""Writing a run's reports: predictions, report.json, the markdown and HTML pages and the plots; adding a section later."""

from __future__ import annotations

import json
from typing import Any, Literal

from tunesmith.config import Config
from tunesmith.data.io import read_jsonl, write_jsonl
from tunesmith.data.prepare import Splits
from tunesmith.evaluate.evaluator import EvalResult
from tunesmith.models.load import LoadedModel
from tunesmith.report.build import build_report
from tunesmith.report.html import render_html
from tunesmith.report.markdown import render_markdown
from tunesmith.report.plots import plot_calibration, plot_confusion, plot_loss
from tunesmith.report.schema import RunReport, read_report, write_report_file
from tunesmith.report.sections import build_sections
from tunesmith.runs.folder import RunPaths
from tunesmith.train.loop import TrainResult
from tunesmith.versions import library_versions

#: Sections a later command adds to a finished run's report.
LaterSection = Literal["human_review", "llm_judge"]


def write_report(run: RunPaths, cfg: Config, lm: LoadedModel, splits: Splits, baseline: EvalResult | None,
                 tuned: EvalResult, result: TrainResult | None, timings: dict[str, float],
                 extra: dict[str, Any] | None = None) -> RunReport:
    """Write predictions, ``report.json``, ``report.md``, ``report.html`` and the plots into the run folder.

    Args:
        extra: Further sections by field name (``fairness``, ``forgetting``); None values are left out.
    """
    if baseline is not None:
        write_jsonl(run.predictions / "baseline.jsonl", baseline.predictions)
    write_jsonl(run.predictions / "tuned.jsonl", tuned.predictions)
    model_info = {"base": cfg.model.base, "path": str(lm.path), "device": lm.device.type,
                  "precision": "bf16 autocast" if lm.autocast_dtype is not None else "fp32"}
    manifest = splits.manifest()
    data = {**splits.counts(), "format": splits.format, "labels": splits.labels, "data_hash": manifest["data_hash"],
            "sha256": {k: v["sha256"] for k, v in manifest["splits"].items()}, "accounting": splits.accounting(),
            "lengths": splits.lengths, "balance": splits.balance, **({"tasks": splits.tasks} if splits.tasks else {})}
    report = build_report(cfg=cfg, run_id=run.id, model_info=model_info, data=data, baseline=baseline,
                          tuned=tuned, train=result, timings=timings)
    # The versions the run started with (written with its config), so a resumed run reports those.
    versions = json.loads(run.versions.read_text()) if run.versions.is_file() else library_versions()
    report = report.model_copy(update={**{k: v for k, v in (extra or {}).items() if v is not None},
                                       "versions": versions})
    write_report_file(run.report_json, report)
    if result is not None:
        plot_loss(result.history, run.loss_plot, title=f"{cfg.project.name}: loss")
    if report.confusion:
        c = report.confusion
        plot_confusion(c["labels"], {k: v for k, v in c.items() if k != "labels"}, run.confusion_plot)
    if report.calibration:
        plot_calibration(report.calibration, run.calibration_plot)
    render_reports(run, report, tuned.predictions, baseline.predictions if baseline else [], cfg.eval.show_examples)
    return report


def render_reports(run: RunPaths, report: RunReport, tuned_rows: list[dict[str, Any]],
                   baseline_rows: list[dict[str, Any]], n_examples: int) -> None:
    """Write ``report.md`` and ``report.html`` from the report's sections."""
    sections = build_sections(report, tuned_rows, baseline_rows, n_examples)
    plots = {"confusion": run.confusion_plot, "loss": run.loss_plot, "calibration": run.calibration_plot}
    run.report_md.write_text(render_markdown(sections, plots), encoding="utf-8")
    run.report_html.write_text(render_html(sections, plots), encoding="utf-8")


def add_report_section(run: RunPaths, cfg: Config, key: LaterSection, value: dict[str, Any]) -> RunReport:
    """Add a section to ``report.json`` and render the markdown and HTML reports again.

    Raises:
        UserError: The run's report cannot be read.
    """
    report = read_report(run.report_json).model_copy(update={key: value})
    write_report_file(run.report_json, report)
    tuned = read_jsonl(run.predictions / "tuned.jsonl")
    base_path_ = run.predictions / "baseline.jsonl"
    baseline = read_jsonl(base_path_) if base_path_.is_file() else []
    render_reports(run, report, tuned, baseline, cfg.eval.show_examples)
    return report
