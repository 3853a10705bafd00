"""The ``tunesmith`` command line, built from the functions' signatures and docstrings.

Human-facing progress goes to stderr; ``--json`` prints one JSON document on stdout.
Exit codes: 0 success, 2 bad input or config, 1 internal error.
"""

from __future__ import annotations

import functools
import importlib
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from tunesmith import __version__
from tunesmith.config import TASKS, load_config, resolve_path
from tunesmith.errors import EXIT_USER, TunesmithError
from tunesmith.evaluate.normalize import match_label
from tunesmith.data.prepare import guess_task, prepare_splits
from tunesmith.data.review import export_sheet, import_sheets
from tunesmith.project import init_project
from tunesmith.report.data_report import write_data_report
from tunesmith.runs import list_runs
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


def _emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def _handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn tunesmith errors into a one-line message and their exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TunesmithError as exc:
            console.print(f"[bold red]error:[/] {exc}", markup=True, soft_wrap=True)
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
            "tuned": report["tuned"]["metrics"], "train": report["train"], "data": report["data"]}


def _print_outcome(summary: dict[str, Any]) -> None:
    metric = summary["objective"]["metric"]
    base = summary["baseline"][metric] if summary["baseline"] else None
    tuned = summary["tuned"][metric]
    line = f"{metric}: baseline {base:.4f} -> tuned {tuned:.4f}" if base is not None else f"{metric}: tuned {tuned:.4f}"
    console.print(f"{line}  verdict: [bold]{summary['verdict']}[/]")
    console.print(f"  {summary['verdict_reason']}", highlight=False)
    print(f"Report: {summary['report_html']} (also {summary['report']})")


def _run_project(project_file: Path, overrides: list[str], as_json: bool) -> None:
    cfg, base = load_config(project_file, overrides)
    run_paths = _pipeline().run_pipeline(cfg, base)
    summary = _summary(run_paths.root)
    _emit(summary) if as_json else _print_outcome(summary)


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
        as_json: JsonOpt = False) -> None:
    """Run the whole pipeline: data, baseline evaluation, fine-tuning, tuned evaluation, report."""
    _run_project(config, [*(set_ or []), *(["data.strict=true"] if strict else [])], as_json)


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
        _emit({"model": label, "metrics": result.metrics, "examples": len(result.predictions), "seconds": result.seconds})
        return
    table = Table(title=f"Test-split metrics: {label}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in result.metrics.items():
        table.add_row(name, f"{value:.4f}")
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


@app.command()
@_handle_errors
def runs(runs_dir: RunsDirOpt = None, config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Project file whose runs to list.")] = None,
         as_json: JsonOpt = False) -> None:
    """List runs with their status and headline metric, newest first."""
    rows = list_runs(_runs_dir(runs_dir, config))
    if as_json:
        _emit(rows)
        return
    if not rows:
        console.print("No runs yet.")
        return
    table = Table()
    for col in ("id", "status", "task", "metric", "baseline", "tuned", "target", "verdict"):
        table.add_column(col, no_wrap=True)
    fmt = lambda v: "–" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
    for r in rows:
        table.add_row(*(fmt(r[c]) for c in ("id", "status", "task", "metric", "baseline", "tuned", "target", "verdict")))
    out_console.print(table)


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
    overrides = [*(set_ or []), f"data.train={json.dumps([str(f.resolve()) for f in files])}"]
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
