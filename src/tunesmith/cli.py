"""The ``tunesmith`` command line, built from the functions' signatures and docstrings.

Human-facing progress goes to stderr; ``--json`` prints one JSON document on stdout.
Exit codes: 0 success, 2 bad input or config, 1 internal error.
"""

from __future__ import annotations

import functools
import importlib
import json
import subprocess
import sys
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from tunesmith import __version__
from tunesmith.config import TASKS, load_config, resolve_path
from tunesmith.errors import EXIT_USER, TunesmithError, UserError
from tunesmith.evaluate.normalize import match_label
from tunesmith.data.prepare import guess_task, prepare_splits
from tunesmith.data.review import export_sheet, import_sheets
from tunesmith.hardware import GPUS, gpu_spec
from tunesmith.project import init_project
from tunesmith.registry import query_runs, sort_value, sync_registry
from tunesmith.report.compare_runs import compare_runs
from tunesmith.report.data_report import write_data_report
from tunesmith.runs import find_run
from tunesmith.ui import console, out_console

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


def _pipeline() -> ModuleType:
    """The pipeline module, imported on first use.

    It brings torch, transformers and peft, which take several seconds to import; deferring
    them lets ``--help``, ``init`` and ``runs`` answer at once. (Not a cycle: cli depends on
    pipeline and nothing below depends on cli.)
    """
    pipeline = importlib.import_module("tunesmith.pipeline")
    # Library chatter (weight-loading bars, notices) would bury tunesmith's own progress.
    hf_logging = importlib.import_module("transformers.utils.logging")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    return pipeline


def _dataprep() -> ModuleType:
    """The data-step module (tokenizer stack only), imported on first use like :func:`_pipeline`."""
    module = importlib.import_module("tunesmith.dataprep")
    importlib.import_module("transformers.utils.logging").set_verbosity_error()
    return module


def _sweep() -> ModuleType:
    """The hyperparameter-search module (optuna and the pipeline), imported on first use like :func:`_pipeline`."""
    _pipeline()
    return importlib.import_module("tunesmith.sweep")


def _plan() -> ModuleType:
    """The planner, imported on first use like :func:`_pipeline`.

    The pipeline's stack is imported first on purpose: the plan counts this process's own
    resident memory as the baseline a run starts from, so it should hold what a run holds.
    """
    _pipeline()
    return importlib.import_module("tunesmith.plan")


def _emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def _handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
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


def _runs_dir(runs_dir: Path | None, config: Path | None = None) -> Path:
    if runs_dir is not None:
        return runs_dir
    project = config or Path("tunesmith.yaml")
    if project.is_file():
        cfg, base = load_config(project)
        return resolve_path(base, cfg.project.runs_dir)
    return Path("runs")


def _summary(run_root: Path) -> dict[str, Any]:
    report = json.loads((run_root / "report.json").read_text())
    return {"run_id": report["run_id"], "run_dir": str(run_root), "report": str(run_root / "report.md"),
            "report_html": str(run_root / "report.html"),
            "objective": report["objective"], "verdict": report["verdict"], "verdict_reason": report["verdict_reason"],
            "interval": report.get("interval"),
            "baseline": report["baseline"]["metrics"] if report["baseline"] else None,
            "tuned": report["tuned"]["metrics"], "train": report["train"], "data": report["data"],
            "per_task": report.get("per_task")}


def _print_outcome(summary: dict[str, Any]) -> None:
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


def _run_project(project_file: Path, overrides: list[str], as_json: bool, resume: str | None = None) -> None:
    pipeline = _pipeline()
    if resume is not None:
        run_paths, cfg, _ = pipeline.load_run(resume, _runs_dir(None, project_file if project_file.is_file() else None))
        run_paths = pipeline.run_pipeline(cfg, run_paths.root, resume=run_paths)
    else:
        cfg, base = load_config(project_file, overrides)
        run_paths = pipeline.run_pipeline(cfg, base)
    if not pipeline.is_main_process():  # under accelerate launch, the first process reports
        return
    summary = _summary(run_paths.root)
    _emit(summary) if as_json else _print_outcome(summary)


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
@_handle_errors
def init(
    folder: Annotated[Path, typer.Argument(help="Project folder to create.")],
    task: Annotated[str, typer.Option("--task", "-t", help=f"One of: {', '.join(TASKS)}.")] = "classification",
    force: Annotated[bool, typer.Option(help="Overwrite an existing tunesmith.yaml.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a commented tunesmith.yaml and a small example dataset for TASK into FOLDER."""
    path = init_project(folder, task, force)
    if as_json:
        _emit({"project_file": str(path), "data": str(folder / "data" / "train.jsonl"), "task": task})
    else:
        console.print(f"Wrote {path} and {folder / 'data' / 'train.jsonl'}")
        print(f"Next: tunesmith run -c {path}")


@app.command()
@_handle_errors
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
@_handle_errors
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
@_handle_errors
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
    result = _sweep().run_sweep(cfg, base, trials)
    if as_json:
        _emit(result)
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
@_handle_errors
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
    planner = _plan()
    result = planner.plan_training(cfg, base, gpu=gpu, measure=measure)
    if as_json:
        _emit(result)
        return
    for table in planner.plan_tables(result):
        out_console.print(table)
    for line in result["basis"]:
        console.print(f"  {line}", markup=False, highlight=False)
    for line in result["suggestions"]:
        console.print(f"suggestion: {line}", style="yellow", markup=False, highlight=False)


@app.command("eval")
@_handle_errors
def eval_(
    run_ref: Annotated[Optional[str], typer.Option("--run", help="Run id or folder to re-evaluate.")] = None,
    base: Annotated[bool, typer.Option("--base", help="Evaluate the untuned base model instead of the tuned one.")] = False,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Project file (with --base and no --run).")] = None,
    runs_dir: RunsDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-evaluate a run's tuned model, or the untuned base model, on the run's test split."""
    from_config = run_ref is None
    if from_config and not base:
        console.print("[bold red]error:[/] give --run RUN, or --base with -c tunesmith.yaml")
        raise typer.Exit(EXIT_USER)
    if from_config:
        cfg, project_dir = load_config(config or Path("tunesmith.yaml"))
        result = _pipeline().evaluate_base(cfg, project_dir)
        label = "base"
    else:
        run_paths, cfg, splits = _pipeline().load_run(run_ref, _runs_dir(runs_dir, config))
        result = _pipeline().evaluate_run(run_paths, cfg, splits, base=base)
        label = f"{run_paths.id} ({'base' if base else 'tuned'})"
    if as_json:
        _emit({"model": label, "metrics": result.metrics, "examples": len(result.predictions), "seconds": result.seconds,
               **({"by_task": result.by_task} if result.by_task else {})})
        return
    table = Table(title=f"Test-split metrics: {label}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in result.metrics.items():
        table.add_row(name, f"{value:.4f}")
    for tag, metrics in result.by_task.items():
        for name, value in metrics.items():
            table.add_row(f"task {tag}: {name}", f"{value:.4f}")
    out_console.print(table)


@app.command()
@_handle_errors
def chat(
    prompt: Annotated[str, typer.Argument(help="The message to answer.")],
    run_ref: Annotated[str, typer.Option("--run", help="Run id or folder whose tuned model answers.")],
    max_new_tokens: Annotated[Optional[int], typer.Option(help="Longest answer (default: the run's eval.max_new_tokens).")] = None,
    runs_dir: RunsDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Answer one PROMPT with a run's tuned model, using the run's system prompt."""
    run_paths, cfg, splits = _pipeline().load_run(run_ref, _runs_dir(runs_dir))
    answer = _pipeline().chat_once(run_paths, cfg, splits, prompt, max_new_tokens)
    # For classification, say which label the answer maps to (None: it names no known label).
    label = match_label(answer, splits.labels) if splits.labels else None
    if as_json:
        _emit({"run_id": run_paths.id, "prompt": prompt, "answer": answer, "label": label})
        return
    print(answer)
    if splits.labels and label is None:
        console.print(f"(the answer is not one of the {len(splits.labels)} labels)")


@app.command()
@_handle_errors
def score(
    task: Annotated[str, typer.Option("--task", "-t", help="One of: " + ", ".join(TASKS) + " (picks the metrics).")],
    predictions: Annotated[Path, typer.Option("--predictions", "-p", help="JSONL lines with id and prediction.")],
    references: Annotated[Path, typer.Option("--references", "-r", help="JSONL lines with id and reference (a string or a list of acceptable strings).")],
    baseline: Annotated[Optional[Path], typer.Option("--baseline", "-b", help="A second system's predictions, compared pairwise.")] = None,
    resamples: Annotated[int, typer.Option("--resamples", help="Bootstrap and permutation resamples.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the resampling.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Score any system's predictions against references, with 95% bootstrap intervals.

    With --baseline, the two prediction files are compared on the same examples: paired
    intervals of the difference and a permutation test say whether the change is significant.
    """
    if task not in TASKS:
        raise typer.BadParameter(f"unknown task {task!r}; one of: {', '.join(TASKS)}", param_hint="--task")
    scoring = importlib.import_module("tunesmith.evaluate.score")  # the metric libraries load only here
    result = scoring.score_files(task, predictions, references, baseline, resamples=resamples, seed=seed)
    if as_json:
        _emit(result)
        return
    table = Table(title=f"{result['count']} examples, {task}")
    for col in ("metric", "value", "95% interval") + (("baseline", "change", "change interval", "p", "") if baseline else ()):
        table.add_column(col, no_wrap=True)
    for name, m in result["metrics"].items():
        row = [name, f"{m['value']:.4f}", f"[{m['low']:.4f}, {m['high']:.4f}]"]
        if result["comparison"]:
            c = result["comparison"][name]
            row += [f"{c['baseline']['value']:.4f}", f"{c['diff']['value']:+.4f}",
                    f"[{c['diff']['low']:+.4f}, {c['diff']['high']:+.4f}]", f"{c['p_value']:.3g}",
                    "significant" if c["significant"] else "not significant"]
        table.add_row(*row)
    out_console.print(table)


def _cell(value: Any) -> str:
    """A table cell: a dash for nothing, six significant digits for floats."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.6g}"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _local_time(iso: str | None) -> str:
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M") if iso else "–"


@app.command()
@_handle_errors
def runs(
    runs_dir: RunsDirOpt = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Project file whose runs to list.")] = None,
    status: Annotated[Optional[str], typer.Option(
        "--status", help="Only runs in this state: running, completed, failed, pruned (sweep trial stopped early), "
                         "missing (folder deleted).")] = None,
    task: Annotated[Optional[str], typer.Option("--task", "-t", help="Only runs of this task.")] = None,
    method: Annotated[Optional[str], typer.Option("--method", help="Only runs of this adapter.method.")] = None,
    since: Annotated[Optional[str], typer.Option(
        "--since", help="Only runs started on or after this date: 2025-01-31 or 2025-01-31T14:00 (local time).")] = None,
    sweep: Annotated[Optional[str], typer.Option("--sweep", help="Only the trial runs of this sweep.")] = None,
    where: Annotated[Optional[list[str]], typer.Option(
        "--where", help="A config condition KEY=VALUE (or !=, <, <=, >, >=), e.g. adapter.r=16 or train.lr<0.01; "
                        "repeatable, all must hold.")] = None,
    sort: Annotated[str, typer.Option(
        "--sort", help="created (newest first); metric (the primary metric, best first) or a test metric such as "
                       "macro_f1; best_val_loss, final_train_loss, seconds, peak_rss_mb (lowest first); "
                       "tokens_per_second.")] = "created",
    limit: Annotated[Optional[int], typer.Option("--limit", "-n", help="Show at most N runs.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List runs from the run registry (RUNS_DIR/registry.sqlite), filtered and sorted.

    Run folders that the registry does not know yet (made before it existed) are recorded
    first; runs whose folder was deleted stay listed with status missing.
    """
    folder = _runs_dir(runs_dir, config)
    sync_registry(folder)
    rows = query_runs(folder, status=status, task=task, method=method, since=since, sweep=sweep, where=where or [],
                      sort=sort, limit=limit)
    if as_json:
        _emit(rows)
        return
    if not rows:
        console.print("No runs match." if any((status, task, method, since, sweep, where)) else "No runs yet.")
        return
    cols = ["id", "created", "status", "task", "method", "metric", "baseline", "tuned", "target", "verdict"]
    cols += ["sweep"] if any(r["sweep"] for r in rows) else []
    extra = sort if sort not in ("created", "metric", "tuned", "baseline") else None
    table = Table()
    for col in cols + ([extra] if extra else []):
        table.add_column(col, no_wrap=True)
    for r in rows:
        cells = [_local_time(r[c]) if c == "created" else _cell(r[c]) for c in cols]
        if extra:
            cells.append(_cell(sort_value(r, extra)[0]))
        table.add_row(*cells)
    out_console.print(table)


@app.command()
@_handle_errors
def compare(
    run_refs: Annotated[list[str], typer.Argument(metavar="RUN", help="Two or more run ids or run folders.")],
    runs_dir: RunsDirOpt = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Project file whose runs these are.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for loss_curves.png and comparison.json.")] = Path(
        "compare"),
    as_json: JsonOpt = False,
) -> None:
    """Compare runs side by side: the config keys that differ, key figures, and one plot of all their loss curves."""
    folder = _runs_dir(runs_dir, config)
    result = compare_runs([find_run(ref, folder) for ref in run_refs], out)
    if as_json:
        _emit(result)
        return
    labels = [r["label"] for r in result["runs"]]
    for title, rows in (("Config differences", result["config"]), ("Figures", result["figures"])):
        table = Table(title=title if rows else f"{title}: none")
        for col in ("key", *labels):
            table.add_column(col, no_wrap=col == "key")
        for key, values in rows.items():
            # A hash prefix is enough to see whether runs trained on the same data.
            table.add_row(key, *(_cell(v)[:12] if key == "data_hash" else _cell(v) for v in values))
        out_console.print(table)
    print(f"Plot: {result['plot']} (and {result['json']})")


data_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Check, prepare, augment and review data before training on it.")
app.add_typer(data_app, name="data")


@data_app.command("check")
@_handle_errors
def data_check(
    files: Annotated[list[Path], typer.Argument(help="Data files or folders (read together as one training input).")],
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Project file whose data settings apply.")] = None,
    task: Annotated[Optional[str], typer.Option("--task", "-t", help="Task (default: the project's, else guessed from the format).")] = None,
    set_: SetOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the report.")] = Path("data-report"),
    strict: Annotated[bool, typer.Option("--strict", help="Exit with code 2 if any row is set aside.")] = False,
    tokens: Annotated[bool, typer.Option("--tokens/--no-tokens", help="Measure token lengths with the base model's tokenizer.")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Read, validate, clean, de-duplicate and split FILES; write a data report (markdown, HTML, plots).

    With --tokens (the default) the base model's tokenizer measures every example as training
    will see it, applies data.length_policy, and one example is shown rendered.
    """
    # FILES replace the project's data, a data.mix included.
    overrides = [*(set_ or []), f"data.train={json.dumps([str(f.resolve()) for f in files])}", "data.mix=null"]
    if task is None and config is None:
        task = guess_task(files[0])
    if task is not None:
        overrides.append(f"objective.task={task}")
    if strict:
        overrides.append("data.strict=true")
    cfg, base = load_config(config, overrides)
    splits = _dataprep().prepare_data(cfg, base, require_test=False) if tokens else prepare_splits(cfg, base, require_test=False)
    summary = write_data_report(splits, out)
    if as_json:
        _emit({**summary, "report": str(out / "data_report.html")})
        return
    _dataprep().print_data_summary(splits, out)
    console.print(f"{summary['rows_read']} rows read: {summary['rows_kept']} kept, {sum(summary['rejected'].values())} "
                  f"set aside, {sum(summary['removed'].values())} removed; {summary['conflicts']} conflicts, "
                  f"{summary['leakage']} leaking, PII {summary['pii'] or 'none'}")
    print(f"Report: {out / 'data_report.html'}")


@data_app.command("prepare")
@_handle_errors
def data_prepare(
    config: ConfigOpt = Path("tunesmith.yaml"),
    set_: SetOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the splits, manifest and report.")] = Path("prepared"),
    as_json: JsonOpt = False,
) -> None:
    """Prepare the project's splits once and write them with their manifest and data report.

    Point data.prepared at the folder (in the project file, or --set data.prepared=FOLDER)
    and `tunesmith run` trains and evaluates on exactly these splits without preparing again.
    """
    cfg, base = load_config(config, set_)
    splits = _dataprep().prepare_data(cfg, base)
    summary = write_data_report(splits, out)
    if as_json:
        _emit({**summary, "folder": str(out), "manifest": str(out / "manifest.json")})
        return
    _dataprep().print_data_summary(splits, out)
    console.print(f"Prepared splits {splits.counts()} (data hash {summary['data_hash'][:12]}) in {out}")
    console.print(f"Train on them: tunesmith run -c {config} --set data.prepared={out.resolve()}")


@data_app.command("augment")
@_handle_errors
def data_augment(
    config: ConfigOpt = Path("tunesmith.yaml"),
    set_: SetOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file for the generated rows (in your data's format).")] = Path("data/generated.jsonl"),
    paraphrases: Annotated[int, typer.Option("--paraphrases", help="Rewrites to ask for per training example.")] = 0,
    new: Annotated[int, typer.Option("--new", help="New examples to ask for in total (self-instruct from a few seeds each).")] = 0,
    generator: Annotated[str, typer.Option("--generator", help="base (the project's base model), a local model folder, or openai.")] = "base",
    endpoint: EndpointOpt = None,
    model: EndpointModelOpt = None,
    api_key_env: ApiKeyEnvOpt = "OPENAI_API_KEY",
    temperature: Annotated[float, typer.Option("--temperature", help="Sampling temperature.")] = 0.8,
    max_seeds: Annotated[Optional[int], typer.Option("--max-seeds", help="Use at most this many training examples as seeds.")] = None,
    append: Annotated[bool, typer.Option("--append", help="Add to an existing output file.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Generate synthetic rows from the training split: paraphrases and new examples, each marked needs_review.

    Rows repeating a seed or each other are filtered out (listed in OUT.filtered.jsonl).
    Add OUT to data.train; training leaves rows with needs_review: true out until they are
    approved with `tunesmith data review`, unless data.unreviewed is include.
    """
    cfg, base = load_config(config, set_)
    pipeline = _pipeline()
    gen = pipeline.make_generator(cfg, generator, endpoint, model, api_key_env)
    result = pipeline.augment_data(cfg, base, gen, out, paraphrases=paraphrases, new=new, temperature=temperature,
                                   max_seeds=max_seeds, append=append)
    if as_json:
        _emit({**result.counts, "out": str(out), "generator": gen.name})
        return
    console.print(f"Generated {result.counts['asked']} candidates with {gen.name}: {result.counts['kept']} kept "
                  f"{result.counts['by_method']}, dropped {result.counts['dropped'] or 'none'}")
    console.print(f"Rows in {out} need review: tunesmith data review export {out} --out review.csv")


review_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Review generated rows before they are trained on.")
data_app.add_typer(review_app, name="review")


@review_app.command("export")
@_handle_errors
def review_export(
    generated: Annotated[Path, typer.Argument(help="Generated rows (JSONL) from `tunesmith data augment`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Sheet to write: .csv for spreadsheets, else JSONL.")] = Path("review.csv"),
    as_json: JsonOpt = False,
) -> None:
    """Write the rows waiting for review as a sheet: fill `decision` (approve/reject) and edit fields freely."""
    n = export_sheet(generated, out)
    if as_json:
        _emit({"rows": n, "sheet": str(out)})
        return
    console.print(f"{n} rows to review in {out}; then: tunesmith data review import {out} --into {generated}")


@review_app.command("import")
@_handle_errors
def review_import(
    sheets: Annotated[list[Path], typer.Argument(help="Reviewed sheets (CSV or JSONL).")],
    into: Annotated[Path, typer.Option("--into", help="The generated rows file the sheets came from (updated in place).")],
    reviewer: Annotated[str, typer.Option("--reviewer", help="Name recorded on each decided row.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Apply reviewed sheets: approved rows enter training, rejected ones are moved aside, empty decisions wait."""
    result = import_sheets(sheets, into, reviewer)
    if as_json:
        _emit({**result.counts, "rejected_file": str(result.rejected_path) if result.rejected_path else None})
        return
    console.print(f"{result.counts}; rejected rows: {result.rejected_path or 'none'}")


human_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Blind human review of a run's baseline and tuned outputs.")
app.add_typer(human_app, name="review")


@human_app.command("export")
@_handle_errors
def human_export(
    run: Annotated[str, typer.Option("--run", help="Run id, or a run folder.")],
    runs_dir: RunsDirOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the shuffling and the A/B sides.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Write a blind, shuffled side-by-side sheet (CSV and JSONL) of a run's outputs; the key is kept apart.

    Give each rater a copy of the sheet (one file per rater, named after them); they fill the
    1-5 rubric columns for A and B and the preference (A, B or tie).
    """
    run_paths, _, _ = _pipeline().load_run(run, _runs_dir(runs_dir))
    sheet_csv, sheet_jsonl, key = _pipeline().export_human_review(run_paths, seed)
    if as_json:
        _emit({"csv": str(sheet_csv), "jsonl": str(sheet_jsonl), "key": str(key)})
        return
    console.print(f"Sheet: {sheet_csv} (and {sheet_jsonl.name}); key, not for raters: {key}")


@human_app.command("import")
@_handle_errors
def human_import(
    sheets: Annotated[list[Path], typer.Argument(help="Rated sheets, one per rater (CSV or JSONL).")],
    run: Annotated[str, typer.Option("--run", help="Run id, or a run folder.")],
    runs_dir: RunsDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Un-blind rated sheets: scores and win rate with intervals, inter-rater agreement; added to the run's report."""
    run_paths, cfg, _ = _pipeline().load_run(run, _runs_dir(runs_dir))
    summary = _pipeline().import_human_review(run_paths, cfg, sheets)
    if as_json:
        _emit(summary)
        return
    win = summary["win_rate"]
    console.print(f"{len(summary['raters'])} raters, {summary['items']} items: tuned wins {win['tuned_wins']}, "
                  f"baseline wins {win['baseline_wins']}, ties {win['ties']}; agreement {summary['agreement']}")
    console.print(f"Report updated: {run_paths.report_html}")


@app.command()
@_handle_errors
def judge(
    run: Annotated[str, typer.Option("--run", help="Run id, or a run folder.")],
    runs_dir: RunsDirOpt = None,
    judge_model: Annotated[str, typer.Option("--judge", help="base (the run's base model), a local model folder, or openai.")] = "base",
    endpoint: EndpointOpt = None,
    model: EndpointModelOpt = None,
    api_key_env: ApiKeyEnvOpt = "OPENAI_API_KEY",
    mode: Annotated[str, typer.Option("--mode", help="rubric, pairwise, or both.")] = "both",
    max_items: Annotated[Optional[int], typer.Option("--max-items", help="Judge at most this many test examples.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Judge a run's test outputs with an LLM: 1-5 rubric scores and baseline-vs-tuned preferences in both orders.

    Every judgement and its rationale goes to judge.jsonl in the run; the summary (with the
    judge-human agreement when `tunesmith review import` has human ratings) goes into the report.
    """
    if mode not in ("rubric", "pairwise", "both"):
        raise typer.BadParameter("one of: rubric, pairwise, both", param_hint="--mode")
    pipeline = _pipeline()
    run_paths, cfg, _ = pipeline.load_run(run, _runs_dir(runs_dir))
    gen = pipeline.make_generator(cfg, judge_model, endpoint, model, api_key_env)
    summary = pipeline.judge_run(run_paths, cfg, gen, rubric=mode != "pairwise", pairwise=mode != "rubric", max_items=max_items)
    if as_json:
        _emit(summary)
        return
    console.print(json.dumps({k: v for k, v in summary.items() if k not in ("criteria",)}, indent=2))
    console.print(f"Report updated: {run_paths.report_html}")


@app.command()
@_handle_errors
def export(
    run_ref: Annotated[str, typer.Option("--run", help="Run id or folder.")],
    merge: Annotated[Path, typer.Option("--merge", help="New folder for the merged model (safetensors + tokenizer).")],
    runs_dir: RunsDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fold a run's adapter into the base model and write a plain model folder any Hugging Face loader reads."""
    pipeline = _pipeline()
    run_paths, cfg, _ = pipeline.load_run(run_ref, _runs_dir(runs_dir))
    result = pipeline.export_merged(run_paths, cfg, merge)
    if as_json:
        _emit(result)
    else:
        console.print(f"Merged the {result['method']} adapter of run {result['run']} into the base model")
        print(f"Model folder: {result['out']} ({result['bytes'] / 1e6:.0f} MB)")


@app.command()
@_handle_errors
def methods(as_json: JsonOpt = False) -> None:
    """List the training methods (adapter.method) with their options and default learning rates."""
    registry = importlib.import_module("tunesmith.models.adapters").METHODS
    rows = [{"method": m.name, "summary": m.summary, "default_lr": m.default_lr, "needs_cuda": m.needs_cuda,
             "mergeable": m.mergeable,
             "options": {k: {"default": f.default, "help": f.description} for k, f in m.options.model_fields.items()}}
            for m in registry.values()]
    if as_json:
        _emit(rows)
        return
    table = Table("method", "default lr", "options (adapter.options)", "what it is")
    for r in rows:
        opts = ", ".join(f"{k}={v['default']}" for k, v in r["options"].items()) or "-"
        table.add_row(r["method"], f"{r['default_lr']:g}", opts, r["summary"])
    out_console.print(table)


def _version(value: bool) -> None:
    if value:
        print(f"tunesmith {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False) -> None:
    """tunesmith: fine-tune a small model that measurably beats the generic one on your task."""


def main() -> None:
    """Entry point of the ``tunesmith`` command."""
    # Deprecation notices from the libraries would bury tunesmith's own progress.
    warnings.filterwarnings("ignore", category=FutureWarning)
    app()
