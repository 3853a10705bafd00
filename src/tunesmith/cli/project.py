"""Commands that start work on a project: init, run, quickstart, sweep, plan, methods."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from tunesmith.cli.common import (ConfigOpt, JsonOpt, SetOpt,
                                  app, emit, handle_errors, lazy, print_outcome, run_summary, runs_dir_of)
from tunesmith.config import load_config
from tunesmith.tasks import TASKS
from tunesmith.console import console, out_console
from tunesmith.errors import UserError
from tunesmith.plan.hardware import GPUS, gpu_spec
from tunesmith.project import init_project


def _planner() -> Any:
    """The planner, imported on first use.

    The fine-tuning recipe's stack is imported first on purpose: the plan counts this process's
    own resident memory as the baseline a run starts from, so it should hold what a run holds.
    """
    lazy("tunesmith.recipes.finetune")
    return importlib.import_module("tunesmith.plan.estimate")


def _run_project(project_file: Path, overrides: list[str], as_json: bool, resume: str | None = None) -> None:
    finetune = lazy("tunesmith.recipes.finetune")
    if resume is not None:
        run_paths, cfg, _ = lazy("tunesmith.ops.reevaluate").load_run(
            resume, runs_dir_of(None, project_file if project_file.is_file() else None))
        run_paths = finetune.run_pipeline(cfg, run_paths.root, resume=run_paths)
    else:
        cfg, base = load_config(project_file, overrides)
        run_paths = finetune.run_pipeline(cfg, base)
    if not finetune.is_main_process():  # under accelerate launch, the first process reports
        return
    summary = run_summary(run_paths.root)
    emit(summary) if as_json else print_outcome(summary)


def _launch(num_processes: int, args: list[str]) -> None:
    """Run this command again under ``accelerate launch`` with ``num_processes`` processes.

    Raises:
        typer.Exit: With the launched command's exit code.
    """
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if num_processes > 1:
        # accelerate starts the processes with torchrun under --multi_gpu; without CUDA they use gloo on the CPU.
        cmd.append("--multi_gpu")
    console.print(f"Launching {num_processes} training processes with accelerate")
    raise typer.Exit(subprocess.call([*cmd, "-m", "tunesmith", *args]))


@app.command()
@handle_errors
def init(
    folder: Annotated[Path, typer.Argument(help="Project folder to create.")],
    task: Annotated[str, typer.Option("--task", "-t", help=f"One of: {', '.join(TASKS)}.")] = "classification",
    force: Annotated[bool, typer.Option(help="Overwrite an existing tunesmith.yaml.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a commented tunesmith.yaml and a small example dataset for TASK into FOLDER."""
    path = init_project(folder, task, force)
    if as_json:
        emit({"project_file": str(path), "data": str(folder / "data" / "train.jsonl"), "task": task})
    else:
        console.print(f"Wrote {path} and {folder / 'data' / 'train.jsonl'}")
        print(f"Next: tunesmith run -c {path}")


@app.command()
@handle_errors
def run(config: ConfigOpt = Path("tunesmith.yaml"), set_: SetOpt = None,
        strict: Annotated[bool, typer.Option("--strict", help="Fail (exit 2) if any data row is set aside.")] = False,
        resume: Annotated[Optional[str], typer.Option("--resume", help="Continue an interrupted run (id or folder) from its latest checkpoint, with its stored config and data.")] = None,
        launcher: Annotated[Optional[str], typer.Option("--launcher", help="'accelerate': train with several processes (DDP; FSDP/DeepSpeed through an accelerate config).")] = None,
        num_processes: Annotated[int, typer.Option("--num-processes", help="Processes for --launcher accelerate (per machine).")] = 2,
        as_json: JsonOpt = False) -> None:
    """Run the whole pipeline: data, baseline evaluation, fine-tuning, tuned evaluation, report."""
    overrides = [*(set_ or []), *(["data.strict=true"] if strict else [])]
    if launcher is not None:
        if launcher != "accelerate":
            raise UserError(f"--launcher: unknown launcher {launcher!r}; available: accelerate")
        args = ["run", "-c", str(config), *(f"--set={o}" for o in overrides), *(["--resume", resume] if resume else []),
                *(["--json"] if as_json else [])]
        _launch(num_processes, args)
    _run_project(config, overrides, as_json, resume)


@app.command()
@handle_errors
def quickstart(
    folder: Annotated[Path, typer.Argument(help="Where to create the example project.")] = Path("tunesmith-quickstart"),
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create the banking77 intent-classification example (init) and run it (run) on the embedded model."""
    project_file = folder / "tunesmith.yaml"
    if not project_file.is_file():
        init_project(folder, "classification")
        console.print(f"Created the example project in {folder} (banking77 subset, PolyAI, CC BY 4.0)")
    _run_project(project_file, set_ or [], as_json)


@app.command()
@handle_errors
def sweep(
    config: ConfigOpt = Path("tunesmith.yaml"),
    trials: Annotated[Optional[int], typer.Option(
        "--trials", "-n", min=1,
        help="Finished (complete or pruned) trials the study should hold when done (default: sweep.trials).")] = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search hyperparameters with optuna (TPE sampler, median pruning); every trial is a recorded run.

    The space is sweep.space in the project file; a trial's score is its run's best validation loss
    (the test split plays no part). The study, trials.jsonl and best.yaml (the project with the best
    values: tunesmith run -c best.yaml) go to RUNS_DIR/sweeps/NAME/. The same command again continues
    the study up to --trials finished trials; a trial cut off by an interrupted sweep is run again.
    """
    cfg, base = load_config(config, set_)
    result = lazy("tunesmith.recipes.sweep").run_sweep(cfg, base, trials)
    if as_json:
        emit(result)
        return
    keys = list(cfg.sweep.space)
    table = Table(title=f"Sweep {result['study']}: best validation loss per trial")
    for col in ("trial", "state", "val loss", *keys, "run"):
        table.add_column(col, no_wrap=True)
    fmt = lambda v: "–" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    for r in result["trials"]:
        table.add_row(str(r["trial"]), r["state"], fmt(r["value"]), *(fmt(r["params"].get(k)) for k in keys),
                      fmt(r["run_id"]))
    out_console.print(table)
    if result["best_config"] is None:
        console.print("No trial has completed with a finite validation loss, so there is no best configuration yet.")
        return
    console.print(f"Best: trial {result['best_trial']} (run {result['best_run_id']}), validation loss "
                  f"{fmt(result['best_value'])}, {result['best_params']}")
    print(f"Best config: {result['best_config']} (train it: tunesmith run -c {result['best_config']})")


@app.command()
@handle_errors
def plan(
    config: ConfigOpt = Path("tunesmith.yaml"),
    gpu: Annotated[Optional[str], typer.Option(
        "--gpu", help="Plan for this GPU instead of this machine: " + ", ".join(GPUS) + ".")] = None,
    set_: SetOpt = None,
    measure: Annotated[bool, typer.Option(
        "--measure/--no-measure", help="On this machine, time a few real training steps (else: FLOPs at a measured matmul speed).")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Estimate trainable parameters, peak memory and time per epoch before training, and whether the run fits.

    The estimate uses the project's real data, batched as training batches it, and the model and
    method built without allocating them; on this machine it times a few real training steps.
    """
    cfg, base = load_config(config, set_)
    if gpu is not None:
        gpu_spec(gpu)  # a misspelt name fails before the slow imports
    planner = _planner()
    result = planner.plan_training(cfg, base, gpu=gpu, measure=measure)
    if as_json:
        emit(result)
        return
    for table in planner.plan_tables(result):
        out_console.print(table)
    for line in result["basis"]:
        console.print(f"  {line}", markup=False, highlight=False)
    for line in result["suggestions"]:
        console.print(f"suggestion: {line}", style="yellow", markup=False, highlight=False)


@app.command()
@handle_errors
def methods(as_json: JsonOpt = False) -> None:
    """List the training methods (adapter.method) with their options and default learning rates."""
    registry = importlib.import_module("tunesmith.models.adapters").METHODS
    rows = [{"method": m.name, "summary": m.summary, "default_lr": m.default_lr, "needs_cuda": m.needs_cuda,
             "mergeable": m.mergeable,
             "options": {k: {"default": f.default, "help": f.description} for k, f in m.options.model_fields.items()}}
            for m in registry.values()]
    if as_json:
        emit(rows)
        return
    table = Table("method", "default lr", "options (adapter.options)", "what it is")
    for r in rows:
        opts = ", ".join(f"{k}={v['default']}" for k, v in r["options"].items()) or "-"
        table.add_row(r["method"], f"{r['default_lr']:g}", opts, r["summary"])
    out_console.print(table)
