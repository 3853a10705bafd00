"""What every command group shares: the root app, common options, JSON output, errors, lazy imports, run summaries."""

from __future__ import annotations

import functools
import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from tunesmith.config import load_config, resolve_path
from tunesmith.console import console
from tunesmith.errors import TunesmithError
from tunesmith.report.schema import read_report

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="tunesmith: fine-tune a small model that measurably beats the generic one on your task.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON document on stdout instead of text.")]

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="The project file.")]

SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a key, e.g. --set train.epochs=2 (repeatable).")]
# The options of commands that talk to a chat model (data augment, judge).
EndpointOpt = Annotated[Optional[str], typer.Option("--endpoint", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1.")]

EndpointModelOpt = Annotated[Optional[str], typer.Option("--model", help="Model name for the endpoint.")]

ApiKeyEnvOpt = Annotated[str, typer.Option("--api-key-env", help="Environment variable holding the endpoint's API key.")]

RunsDirOpt = Annotated[Optional[Path], typer.Option("--runs-dir", help="Folder of runs (default: from ./tunesmith.yaml, else ./runs).")]


#: A finished run to work on; found in the runs folder, or by its id in any runs folder tunesmith knows.
RunOpt = Annotated[str, typer.Option("--run", help="Run id, or a run folder.")]


def load_run(ref: str, runs_dir: Path | None, config: Path | None = None) -> Any:
    """The run ``ref`` with its stored config and splits (:func:`tunesmith.ops.reevaluate.load_run`).

    Raises:
        UserError: No such run.
    """
    return lazy("tunesmith.ops.reevaluate").load_run(ref, runs_dir_of(runs_dir, config))


def lazy(name: str) -> ModuleType:
    """The module ``name``, imported on first use.

    The recipes and services bring torch, transformers and peft, which take several seconds to
    import; deferring them lets ``--help``, ``init`` and ``runs`` answer at once.
    """
    module = importlib.import_module(name)
    # Library chatter (weight-loading bars, notices) would bury tunesmith's own progress.
    hf_logging = importlib.import_module("transformers.utils.logging")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    return module


def emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn tunesmith errors into a one-line message and their exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TunesmithError as exc:
            # Escaped: messages quote user text and install hints such as tunesmith[track].
            console.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


def runs_dir_of(runs_dir: Path | None, config: Path | None = None) -> Path:
    if runs_dir is not None:
        return runs_dir
    project = config or Path("tunesmith.yaml")
    if project.is_file():
        cfg, base = load_config(project)
        return resolve_path(base, cfg.project.runs_dir)
    return Path("runs")


def project_config(config: Path | None) -> tuple[Any, Path]:
    """The project file given, else ./tunesmith.yaml if there is one, else the defaults; with its folder.

    Raises:
        ConfigError: The file is invalid.
    """
    path = config or (Path("tunesmith.yaml") if Path("tunesmith.yaml").is_file() else None)
    return load_config(path)


def run_summary(run_root: Path) -> dict[str, Any]:
    report = read_report(run_root / "report.json").model_dump(mode="json")
    return {"run_id": report["run_id"], "run_dir": str(run_root), "report": str(run_root / "report.md"),
            "report_html": str(run_root / "report.html"),
            "objective": report["objective"], "verdict": report["verdict"], "verdict_reason": report["verdict_reason"],
            "interval": report["interval"],
            "baseline": report["baseline"]["metrics"] if report["baseline"] else None,
            "tuned": report["tuned"]["metrics"], "train": report["train"], "data": report["data"],
            "per_task": report["per_task"]}


def print_outcome(summary: dict[str, Any]) -> None:
    metric = summary["objective"]["metric"]
    base = summary["baseline"][metric] if summary["baseline"] else None
    tuned = summary["tuned"][metric]
    line = f"{metric}: baseline {base:.4f} -> tuned {tuned:.4f}" if base is not None else f"{metric}: tuned {tuned:.4f}"
    console.print(f"{line}  verdict: [bold]{summary['verdict']}[/]")
    console.print(f"  {summary['verdict_reason']}", highlight=False)
    for t in summary.get("per_task") or []:
        m = t["metrics"].get(t["metric"])
        if m:
            before = f"{m['baseline']['value']:.4f} -> " if "baseline" in m else ""
            console.print(f"  task {t['task']} ({t['type']}, {t['count']} test examples): {t['metric']} {before}"
                          f"{m['tuned']['value']:.4f}", highlight=False)
    print(f"Report: {summary['report_html']} (also {summary['report']})")
    run_id = summary["run_id"]
    console.print(f"Next: tunesmith chat --run {run_id} \"a message\" | tunesmith predict --run {run_id} FILE | "
                  f"tunesmith serve --run {run_id} | tunesmith export --run {run_id} --merge DIR | tunesmith runs",
                  highlight=False, soft_wrap=True)
