"""Writing a run's reports: predictions, report.json, the markdown and HTML pages and the plots; adding a section later."""

from __future__ import annotations

import json
from typing import Any

from tunesmith.config import Config
from tunesmith.data.io import read_jsonl, write_jsonl
from tunesmith.data.prepare import Splits
from tunesmith.evaluate.evaluator import EvalResult
from tunesmith.models.load import LoadedModel
from tunesmith.report.build import build_report
from tunesmith.report.html import render_html
from tunesmith.report.markdown import render_markdown
from tunesmith.report.plots import plot_confusion, plot_loss
from tunesmith.runs.folder import RunPaths
from tunesmith.train.loop import TrainResult
from tunesmith.versions import library_versions


def write_report(run: RunPaths, cfg: Config, lm: LoadedModel, splits: Splits, baseline: EvalResult | None,
                 tuned: EvalResult, result: TrainResult | None, timings: dict[str, float],
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write predictions, ``report.json``, ``report.md``, ``report.html`` and the plots into the run folder."""
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
    report.update({k: v for k, v in (extra or {}).items() if v is not None})
    report["versions"] = library_versions()
    run.report_json.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    if result is not None:
        plot_loss(result.history, run.loss_plot, title=f"{cfg.project.name}: loss")
    if report.get("confusion"):
        c = report["confusion"]
        plot_confusion(c["labels"], {k: v for k, v in c.items() if k != "labels"}, run.confusion_plot)
    run.report_html.write_text(render_html(report, {"confusion": run.confusion_plot, "loss": run.loss_plot}),
                               encoding="utf-8")
    md = render_markdown(report, tuned.predictions, baseline.predictions if baseline else [], cfg.eval.show_examples)
    run.report_md.write_text(md, encoding="utf-8")
    return report


def add_report_section(run: RunPaths, cfg: Config, key: str, value: dict[str, Any]) -> None:
    """Add a section to ``report.json`` and render the markdown and HTML reports again."""
    report = json.loads(run.report_json.read_text())
    report[key] = value
    run.report_json.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    tuned = read_jsonl(run.predictions / "tuned.jsonl")
    base_path_ = run.predictions / "baseline.jsonl"
    baseline = read_jsonl(base_path_) if base_path_.is_file() else []
    run.report_md.write_text(render_markdown(report, tuned, baseline, cfg.eval.show_examples), encoding="utf-8")
    run.report_html.write_text(render_html(report, {"confusion": run.confusion_plot, "loss": run.loss_plot}), encoding="utf-8")
