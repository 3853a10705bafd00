"""What the UI's pages show, as plain data read from the project: the run registry, run folders, the
monitoring report, the aliases, review queues. No HTML here (the templates draw it) and no writes
but through the package's own functions (aliases, review import), so the UI and the CLI leave the
same files."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tunesmith.config import Config
from tunesmith.data.io import read_jsonl, write_jsonl
from tunesmith.data.review import import_sheets
from tunesmith.errors import UserError
from tunesmith.monitor.schema import MonitorReport, read_monitor_report
from tunesmith.report.html import render_body
from tunesmith.report.retrain import read_retrain_report, retrain_sections
from tunesmith.report.schema import read_report_if_any
from tunesmith.report.sections import build_sections
from tunesmith.runs.aliases import alias_history, aliases_of
from tunesmith.runs.compare import read_history
from tunesmith.runs.folder import RunPaths, find_run
from tunesmith.runs.store import query_runs, sync_registry

__all__ = ["query_runs"]  # the pages list runs through this module

#: Columns of the runs table, in order, and how each sorts.
RUN_COLUMNS = ("id", "status", "task", "method", "data_hash", "metric", "tuned", "verdict", "aliases")


def runs_table(runs_dir: Path, *, status: str = "", task: str = "", text: str = "", sort: str = "created",
               descending: bool = True) -> list[dict[str, Any]]:
    """The registry's rows for the runs table, filtered (status, task, free text over id/method/verdict/alias)."""
    sync_registry(runs_dir)
    rows = query_runs(runs_dir, status=status or None, task=task or None)
    needle = text.strip().lower()
    if needle:
        rows = [r for r in rows if needle in " ".join(str(r.get(k) or "") for k in ("id", "method", "verdict", "task",
                                                                                 "status")).lower()
                or any(needle in a for a in r["aliases"])]
    for r in rows:
        iv = r["metrics"].get("interval") or {}
        r["interval"] = [iv["low"], iv["high"]] if iv.get("low") is not None else None
    if sort in RUN_COLUMNS or sort == "created":
        key = (lambda r: (r.get(sort) is None, str(r.get(sort)) if not isinstance(r.get(sort), (int, float))
                          else r.get(sort)))
        present = [r for r in rows if r.get(sort) is not None]
        absent = [r for r in rows if r.get(sort) is None]
        rows = sorted(present, key=key, reverse=descending) + absent
    return rows


def loss_history(run: RunPaths) -> dict[str, list[Any]]:
    """``metrics.jsonl`` as chart series: steps with the training and validation loss (None where not logged)."""
    train, val = {}, {}
    for row in read_history(run):
        if "train_loss" in row:
            train[row["step"]] = row["train_loss"]
        if "val_loss" in row:
            val[row["step"]] = row["val_loss"]
    steps = sorted({*train, *val})
    return {"step": steps, "train_loss": [train.get(s) for s in steps], "val_loss": [val.get(s) for s in steps]}


def run_status(run: RunPaths) -> dict[str, Any]:
    """``status.json`` with the progress the metrics show (step of the planned total, when known)."""
    status = json.loads(run.status.read_text()) if run.status.is_file() else {"status": "unknown"}
    history = loss_history(run)
    status["step"] = history["step"][-1] if history["step"] else 0
    status["total_steps"] = status.get("total_steps")
    return status


def run_page(runs_dir: Path, run_id: str) -> dict[str, Any]:
    """Everything the run page shows: status, the report (verdict first) as HTML, config, data manifest.

    Raises:
        UserError: No such run.
    """
    run = find_run(run_id, runs_dir)
    report = read_report_if_any(run.report_json)
    body = ""
    if report is not None:
        tuned_rows = list(read_jsonl(run.predictions / "tuned.jsonl")) if (run.predictions / "tuned.jsonl").is_file() else []
        plots = {name: path for name, path in (("loss", run.loss_plot), ("confusion", run.confusion_plot),
                                               ("calibration", run.calibration_plot)) if path.is_file()}
        base_rows = (list(read_jsonl(run.predictions / "baseline.jsonl"))
                     if (run.predictions / "baseline.jsonl").is_file() else [])
        body = render_body(build_sections(report, tuned_rows, base_rows, 3), plots, skip={"loss"})
    manifest = json.loads((run.data / "manifest.json").read_text()) if (run.data / "manifest.json").is_file() else None
    config = run.config.read_text(encoding="utf-8") if run.config.is_file() else ""
    retrain = (render_body(retrain_sections(read_retrain_report(run.retrain_json)))
               if run.retrain_json.is_file() else None)
    return {"id": run.id, "status": run_status(run), "report": report, "body": body, "config": config,
            "manifest": manifest, "retrain": retrain, "aliases": [a for a, r in aliases_of(runs_dir).items()
                                                                   if r == run.id]}


def monitor_page(cfg: Config, project_dir: Path) -> dict[str, Any]:
    """The latest monitoring report (``monitor.out``), the aliases and their history."""
    out = cfg.monitor.out if cfg.monitor.out.is_absolute() else project_dir / cfg.monitor.out
    report: MonitorReport | None = None
    if (out / "report.json").is_file():
        report = read_monitor_report(out / "report.json")
    runs_dir = cfg.project.runs_dir
    completed = [r["id"] for r in query_runs(runs_dir, status="completed")] if runs_dir.is_dir() else []
    return {"report": report, "timeline": (out / "timeline.png") if (out / "timeline.png").is_file() else None,
            "aliases": aliases_of(runs_dir), "history": list(reversed(alias_history(runs_dir)))[:30],
            "completed": completed}


# --------------------------------------------------------------------------- review queue

#: Row fields that are the review's own bookkeeping, not the row's content.
_BOOKKEEPING = ("needs_review", "provenance", "review")


def review_files(project_dir: Path, cfg: Config) -> list[Path]:
    """JSONL files of the project with rows waiting for review (generated or exported from the log)."""
    seen = []
    for path in sorted(project_dir.rglob("*.jsonl")):
        if any(part in ("runs", ".venv", "node_modules", "data-report", "monitor")
               for part in path.relative_to(project_dir).parts):
            continue
        try:
            if any(row.get("needs_review") is True for row in read_jsonl(path)):
                seen.append(path)
        except (OSError, ValueError, UserError):
            continue
    return seen


def review_queue(path: Path) -> list[dict[str, Any]]:
    """The rows of ``path`` waiting for review, each with its ``review_id`` (line number) and editable fields."""
    out = []
    for i, row in enumerate(read_jsonl(path), start=1):
        if row.get("needs_review") is not True:
            continue
        fields = {k: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for k, v in row.items()
                  if k not in _BOOKKEEPING}
        out.append({"review_id": i, "fields": fields, "provenance": row.get("provenance") or {}})
    return out


def decide_row(path: Path, review_id: int, decision: str, edits: dict[str, str], reviewer: str) -> dict[str, int]:
    """Approve or reject one row, with edits, exactly as ``tunesmith data review import`` would from a sheet.

    Raises:
        DataError: An unknown row, a bad decision, or an edit that is not valid JSON where the field is JSON.
    """
    with tempfile.TemporaryDirectory() as tmp:
        sheet = Path(tmp) / "sheet.jsonl"
        write_jsonl(sheet, [{"review_id": review_id, "decision": decision, **edits}])
        return import_sheets([sheet], path, reviewer).counts


def project_settings(project_file: Path) -> dict[str, Any]:
    """The few settings the start page edits, read from a project file."""
    data = yaml.safe_load(project_file.read_text(encoding="utf-8")) or {}
    adapter, train = data.get("adapter") or {}, data.get("train") or {}
    return {"method": adapter.get("method", "lora"), "r": adapter.get("r", 16), "epochs": train.get("epochs", 2),
            "lr": train.get("lr")}


# --------------------------------------------------------------------------- blind A/B review

def rater_sheet(run: RunPaths, rater: str) -> Path:
    """One rater's sheet in the run's review folder (a file of their own, as ``human-eval import`` takes them)."""
    safe = "".join(ch for ch in rater if ch.isalnum() or ch in "-_.") or "rater"
    return run.root / "review" / "raters" / f"{safe}.jsonl"


def ab_state(run: RunPaths, rater: str) -> dict[str, Any]:
    """The blind sheet's next item this rater has not rated, how far they are, and the results so far."""
    sheet = run.root / "review" / "review.jsonl"
    if not sheet.is_file():
        return {"exported": False}
    items = list(read_jsonl(sheet))
    done = {r["item"] for r in read_jsonl(rater_sheet(run, rater))} if rater and rater_sheet(run, rater).is_file() else set()
    criteria = json.loads((run.root / "review" / "review_key.json").read_text())["criteria"]
    nxt = next((it for it in items if it["item"] not in done), None)
    report = read_report_if_any(run.report_json)
    return {"exported": True, "item": nxt, "done": len(done), "total": len(items), "criteria": criteria,
            "results": report.human_review if report else None}


def rate_item(run: RunPaths, cfg: Config, rater: str, row: dict[str, str]) -> dict[str, Any]:
    """Record one rating in the rater's sheet, then import every rater's sheet into the run's reports
    (``ratings.jsonl`` and the report's human-review section, as ``tunesmith human-eval import`` writes them).

    Raises:
        DataError: A score or preference is not valid (checked by the import, naming the field).
    """
    from tunesmith.ops.human_eval import import_human_review

    path = rater_sheet(run, rater)
    kept = [r for r in read_jsonl(path) if r["item"] != row["item"]] if path.is_file() else []
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(path, [*kept, row])
    return import_human_review(run, cfg, sorted(path.parent.glob("*.jsonl")))
