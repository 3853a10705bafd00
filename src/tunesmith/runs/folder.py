"""Run folders: creating them, recording their status, finding and listing them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError

STATUS_FILE = "status.json"


@dataclass(frozen=True)
class RunPaths:
    """The files of one run folder."""

    root: Path

    @property
    def id(self) -> str:
        """The run's id (its folder name)."""
        return self.root.name

    config = property(lambda self: self.root / "config.yaml")
    adapter = property(lambda self: self.root / "adapter")
    checkpoints = property(lambda self: self.root / "checkpoints")
    stages = property(lambda self: self.root / "stages.json")
    data = property(lambda self: self.root / "data")
    metrics = property(lambda self: self.root / "metrics.jsonl")
    predictions = property(lambda self: self.root / "predictions")
    report_md = property(lambda self: self.root / "report.md")
    report_json = property(lambda self: self.root / "report.json")
    loss_plot = property(lambda self: self.root / "loss.png")
    confusion_plot = property(lambda self: self.root / "confusion.png")
    calibration_plot = property(lambda self: self.root / "calibration.png")
    report_html = property(lambda self: self.root / "report.html")
    status = property(lambda self: self.root / STATUS_FILE)
    versions = property(lambda self: self.root / "versions.json")
    lineage = property(lambda self: self.root / "lineage.json")
    retrain_json = property(lambda self: self.root / "retrain.json")
    retrain_md = property(lambda self: self.root / "retrain.md")


def new_run(runs_dir: Path, task: str) -> RunPaths:
    """Create a fresh, uniquely named run folder ``<runs_dir>/<timestamp>-<task>[-n]``."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    n = 0
    while True:
        root = runs_dir / (f"{stamp}-{task}" + (f"-{n}" if n else ""))
        try:
            root.mkdir()
            return RunPaths(root)
        except FileExistsError:
            n += 1


def write_status(run: RunPaths, status: str, **extra: Any) -> None:
    """Record the run's state (``running``, ``completed``, ``failed``) with a time stamp."""
    data = {"status": status, "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra}
    if run.status.is_file():
        data = {**json.loads(run.status.read_text()), **data}
    run.status.write_text(json.dumps(data, indent=2))


def find_run(ref: str, runs_dir: Path) -> RunPaths:
    """Find a run by folder path or by id inside ``runs_dir``.

    Raises:
        UserError: No such run.
    """
    for cand in (Path(ref), runs_dir / ref):
        if cand.is_dir() and (cand / "config.yaml").is_file():
            return RunPaths(cand)
    raise UserError(f"no run '{ref}' (looked for a run folder at {ref} and in {runs_dir}/)")

