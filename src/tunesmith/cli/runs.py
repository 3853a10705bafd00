"""Commands on finished runs: runs, compare, eval, chat, export, judge, and score for any system's predictions."""

from __future__ import annotations

import importlib
import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from tunesmith.cli.common import (
    ApiKeyEnvOpt,
    EndpointModelOpt,
    EndpointOpt,
    JsonOpt,
    RunOpt,
    RunsDirOpt,
    app,
    emit,
    handle_errors,
    lazy,
    load_run,
    runs_dir_of,
)
from tunesmith.config import load_config
from tunesmith.data.formats import FORMATS
from tunesmith.console import console, out_console
from tunesmith.errors import EXIT_USER
from tunesmith.evaluate.intervals import Interval
from tunesmith.report.sections import judge_sentence
from tunesmith.runs.compare import compare_runs
from tunesmith.runs.folder import find_run
from tunesmith.runs.store import query_known_runs, query_runs, sort_value, sync_registry
from tunesmith.tasks import TASKS


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
@handle_errors
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
    folder = runs_dir_of(runs_dir, config)
    filters = {"status": status, "task": task, "method": method, "since": since, "sweep": sweep, "where": where or [],
               "sort": sort, "limit": limit}
    here = runs_dir is not None or config is not None or Path("tunesmith.yaml").is_file() or folder.is_dir()
    if here:
        sync_registry(folder)
        rows = query_runs(folder, **filters)
    else:  # no project and no runs folder here: every runs folder tunesmith has recorded runs in
        rows = query_known_runs(**filters)
        if rows and not as_json:
            console.print(f"No runs folder here ({folder}); runs from every folder tunesmith knows:")
    if as_json:
        emit(rows)
        return
    if not rows:
        console.print("No runs match." if any((status, task, method, since, sweep, where)) else "No runs yet.")
        return
    cols = ["id", "created", "status", "task", "method", "metric", "baseline", "tuned", "target", "verdict"]
    cols += ["sweep"] if any(r["sweep"] for r in rows) else []
    cols += ["aliases"] if any(r.get("aliases") for r in rows) else []
    extra = sort if sort not in ("created", "metric", "tuned", "baseline") else None
    table = Table()
    for col in cols + ([extra] if extra else []):
        # Ids are what the next command needs: never cropped, whatever the width (other columns give way).
        table.add_column(col, no_wrap=True, min_width=max(len(str(r["id"])) for r in rows) if col == "id" else None,
                         overflow="fold" if col == "id" else "ellipsis")
    for r in rows:
        cells = [_local_time(r[c]) if c == "created" else ", ".join(r[c]) if c == "aliases" else _cell(r[c])
                 for c in cols]
        if extra:
            cells.append(_cell(sort_value(r, extra)[0]))
        table.add_row(*cells)
    out_console.print(table)


@app.command()
@handle_errors
def compare(
    run_refs: Annotated[list[str], typer.Argument(metavar="RUN", help="Two or more run ids or run folders.")],
    runs_dir: RunsDirOpt = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Project file whose runs these are.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for loss_curves.png and comparison.json.")] = Path(
        "compare"),
    as_json: JsonOpt = False,
) -> None:
    """Compare runs side by side: the config keys that differ, key figures, and one plot of all their loss curves."""
    folder = runs_dir_of(runs_dir, config)
    result = compare_runs([find_run(ref, folder) for ref in run_refs], out)
    if as_json:
        emit(result)
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


@app.command("eval")
@handle_errors
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
        result = lazy("tunesmith.ops.reevaluate").evaluate_base(cfg, project_dir)
        label = "base"
    else:
        run_paths, cfg, splits = load_run(run_ref, runs_dir, config)
        result = lazy("tunesmith.ops.reevaluate").evaluate_run(run_paths, cfg, splits, base=base)
        label = f"{run_paths.id} ({'base' if base else 'tuned'})"
    if as_json:
        emit({"model": label, "metrics": result.metrics, "examples": len(result.predictions), "seconds": result.seconds,
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
@handle_errors
def chat(
    prompt: Annotated[str, typer.Argument(help="The message to answer.")],
    run_ref: Annotated[str, typer.Option("--run", help="Run id or folder whose tuned model answers.")],
    max_new_tokens: Annotated[Optional[int], typer.Option(help="Longest answer (default: the run's eval.max_new_tokens).")] = None,
    runs_dir: RunsDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Answer one PROMPT with a run's tuned model, using the run's system prompt."""
    run_paths, cfg, splits = load_run(run_ref, runs_dir)
    reply = lazy("tunesmith.ops.chat").chat_reply(run_paths, cfg, splits, prompt, max_new_tokens)
    if as_json:
        emit({"run_id": run_paths.id, "prompt": prompt, "answer": reply.answer, "label": reply.label,
              "probability": reply.probability, "free_label": reply.free_label})
        return
    print(reply.answer)
    if splits.labels and reply.label is not None and reply.label != reply.answer:
        shown = f" (probability {reply.probability:.2f})" if reply.probability is not None else ""
        console.print(f"label: {reply.label}{shown}" + ("" if reply.free_label else "; the free answer names no label"),
                      highlight=False)
    elif splits.labels and reply.label is None:
        console.print(f"(the answer is not one of the {len(splits.labels)} labels)")


@app.command()
@handle_errors
def predict(
    file: Annotated[Path, typer.Argument(help="Rows to answer: a data file or folder in any supported format (the answer column may be missing).")],
    run_ref: RunOpt,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Answers file: .csv for CSV, else JSONL (default: FILE's name + .predictions.jsonl here).")] = None,
    data_format: Annotated[Optional[str], typer.Option("--format", help="Read the rows as this format (default: the run's; 'auto' detects it).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Prompts generated together (default: the run's eval.batch_size).")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option("--max-new-tokens", help="Longest answer (default: the run's eval.max_new_tokens).")] = None,
    runs_dir: RunsDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Answer every row of FILE with a run's tuned model, in batches, with the run's system prompt.

    Each answer row keeps the row's id, line and input columns, with ``prediction`` (for
    classification, the label the answer names, empty if none) and ``output`` (the raw answer).
    Rows that cannot be used are set aside in <out>.rejected.jsonl with the reason and the raw line.
    """
    if data_format is not None and data_format != "auto" and data_format not in FORMATS:
        raise typer.BadParameter(f"unknown format {data_format!r}; one of: auto, {', '.join(FORMATS)}", param_hint="--format")
    run_paths, cfg, splits = load_run(run_ref, runs_dir)
    target = out or Path(f"{file.name.split('.')[0]}.predictions.jsonl")
    ops = lazy("tunesmith.ops.predict")
    summary = ops.predict_file(run_paths, cfg, splits, file, target, data_format=data_format, batch_size=batch_size,
                               max_new_tokens=max_new_tokens)
    if as_json:
        emit(ops.summary_dict(summary))
        return
    console.print(f"{summary.rows_read} rows read ({summary.format}): {summary.answered} answered -> {summary.out}, "
                  f"{summary.set_aside} set aside" + (f" -> {summary.rejected}" if summary.set_aside else "")
                  + f"; {summary.seconds:.1f} s", highlight=False, soft_wrap=True)
    if splits.labels and summary.unmatched:
        if summary.constrained:
            console.print(f"answers decoded within the {len(splits.labels)} labels ('prediction', with 'confidence'); "
                          f"{summary.unmatched} free answers named none of them ('output')", highlight=False)
        else:
            console.print(f"{summary.unmatched} answers name none of the {len(splits.labels)} labels (empty prediction; "
                          "the raw answer is in 'output')", highlight=False)


@app.command()
@handle_errors
def export(
    run_ref: RunOpt,
    merge: Annotated[Optional[Path], typer.Option("--merge", help="New folder for the merged model (safetensors + tokenizer).")] = None,
    adapter: Annotated[Optional[Path], typer.Option("--adapter", help="New folder for the adapter alone, portable (PEFT format, its base named by hub id or your model.base).")] = None,
    gguf: Annotated[Optional[Path], typer.Option("--gguf", help="New .gguf file: the merged model for llama.cpp and Ollama (a Modelfile is written beside it).")] = None,
    quant: Annotated[str, typer.Option("--quant", help="GGUF weight type: f16, q8_0 or q4_0.")] = "f16",
    vllm: Annotated[Optional[Path], typer.Option("--vllm", help="New folder: the adapter as vLLM loads it, and serve.sh with the vllm serve command.")] = None,
    runs_dir: RunsDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a run's model for use elsewhere: merged (--merge), as a portable adapter (--adapter), as GGUF for
    llama.cpp/Ollama (--gguf), or for vLLM (--vllm).

    The merged and adapter folders carry the run's system prompt in the chat template, a greedy
    generation config and a model card (README.md) with the task, labels, metrics with intervals
    and the verdict; the GGUF file carries the same chat template, its Modelfile the system prompt.
    """
    chosen = [name for name, value in (("--merge", merge), ("--adapter", adapter), ("--gguf", gguf), ("--vllm", vllm))
              if value is not None]
    if len(chosen) != 1:
        raise typer.BadParameter("give one of --merge FOLDER (a full model), --adapter FOLDER (the adapter alone), "
                                 "--gguf FILE.gguf (llama.cpp, Ollama) or --vllm FOLDER", param_hint="/".join(chosen) or "--merge")
    run_paths, cfg, _ = load_run(run_ref, runs_dir)
    ops = lazy("tunesmith.ops.export")
    if gguf is not None or vllm is not None:
        result = ops.export_gguf(run_paths, cfg, gguf, quant) if gguf is not None else ops.export_vllm(run_paths, cfg, vllm)
        if as_json:
            emit(result)
        elif gguf is not None:
            print(f"GGUF ({result['quant']}): {result['gguf']} ({result['bytes'] / 1e6:.0f} MB); Ollama: "
                  f"{result['modelfile']} (ollama create NAME -f Modelfile)")
        else:
            print(f"vLLM adapter: {result['adapter']}; serve it on a GPU with {result['serve_sh']}")
        return
    result = ops.export_merged(run_paths, cfg, merge) if merge else ops.export_adapter(run_paths, cfg, adapter)
    if as_json:
        emit(result)
        return
    if merge:
        console.print(f"Merged the {result['method']} adapter of run {result['run']} into the base model")
        print(f"Model folder: {result['out']} ({result['bytes'] / 1e6:.0f} MB)")
    else:
        console.print(f"The {result['method']} adapter of run {result['run']}, for base model {result['base']}")
        if result["base_note"]:
            console.print(result["base_note"], style="dim", highlight=False)
        print(f"Adapter folder: {result['out']} ({result['bytes'] / 1e6:.1f} MB)")


@app.command()
@handle_errors
def judge(
    run: RunOpt,
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
    judge-human agreement when `tunesmith human-eval import` has human ratings) goes into the report.
    """
    if mode not in ("rubric", "pairwise", "both"):
        raise typer.BadParameter("one of: rubric, pairwise, both", param_hint="--mode")
    run_paths, cfg, _ = load_run(run, runs_dir)
    gen = lazy("tunesmith.steps.model").load_generator(cfg, judge_model, endpoint, model, api_key_env)
    summary = lazy("tunesmith.ops.judge").judge_run(run_paths, cfg, gen, rubric=mode != "pairwise", pairwise=mode != "rubric", max_items=max_items)
    if as_json:
        emit(summary)
        return
    console.print(f"Judge {summary['judge']}: {judge_sentence(summary)}", highlight=False)
    for criterion, mean in (summary.get("rubric") or {}).items():
        judged = summary["rubric_judged"][criterion]
        console.print(f"  {criterion}: " + (f"mean {mean:.2f} over {judged} items" if mean is not None
                                              else f"no mean ({judged} items judged)"), highlight=False)
    pw = summary.get("pairwise")
    if pw:
        rate = "none (too few decided)" if pw["win_rate"] is None else f"{pw['win_rate']:.2f}"
        console.print(f"  pairwise, both orders: tuned {pw['tuned']}, baseline {pw['baseline']}, tie {pw['tie']}, "
                      f"disagree {pw['disagree']}, unreadable {pw['unreadable']}; tuned win rate {rate}; position A "
                      f"picked {pw['picked_position_a']:.0%}", highlight=False)
    console.print(f"Every judgement with its rationale: {run_paths.root / 'judge.jsonl'}; report updated: "
                  f"{run_paths.report_html}")


@app.command()
@handle_errors
def score(
    task: Annotated[str, typer.Option("--task", "-t", help="One of: " + ", ".join(TASKS) + " (picks the metrics).")],
    predictions: Annotated[Path, typer.Option("--predictions", "-p", help="JSONL lines with id and prediction.")],
    references: Annotated[Path, typer.Option("--references", "-r", help="JSONL lines with id and reference (a string or a list of acceptable strings).")],
    baseline: Annotated[Optional[Path], typer.Option("--baseline", "-b", help="A second system's predictions, compared pairwise.")] = None,
    resamples: Annotated[int, typer.Option("--resamples", help="Bootstrap and permutation resamples.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the resampling.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Score any system's predictions against references, with 95% intervals.

    With --baseline, the two prediction files are compared on the same examples: a paired test and
    the interval of the difference (which never contradict each other) say whether the change is
    significant. Under 30 examples proportions get exact intervals and other metrics none.
    """
    if task not in TASKS:
        raise typer.BadParameter(f"unknown task {task!r}; one of: {', '.join(TASKS)}", param_hint="--task")
    scoring = importlib.import_module("tunesmith.evaluate.score")  # the metric libraries load only here
    result = scoring.score_files(task, predictions, references, baseline, resamples=resamples, seed=seed)
    if as_json:
        emit(result)
        return
    table = Table(title=f"{result['count']} examples, {task}")
    for col in ("metric", "value", "95% interval") + (("baseline", "change", "change interval", "p", "test", "")
                                                       if baseline else ()):
        table.add_column(col, no_wrap=True)
    for name, m in result["metrics"].items():
        row = [name, f"{m['value']:.4f}", Interval.from_dict(m).span()]
        if result["comparison"]:
            c = result["comparison"][name]
            row += [f"{c['baseline']['value']:.4f}", f"{c['diff']['value']:+.4f}",
                    Interval.from_dict(c["diff"]).span(signed=True), f"{c['p_value']:.3g}", c["test"],
                    "significant" if c["significant"] else "not significant"]
        table.add_row(*row)
    out_console.print(table)
    if result["count"] < scoring.MIN_TEST_EXAMPLES:
        console.print(f"warning: {result['count']} examples are fewer than {scoring.MIN_TEST_EXAMPLES}: no bootstrap "
                      "intervals; exact methods where the metric is a proportion", highlight=False)
