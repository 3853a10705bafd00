"""The end-to-end pipeline: objective -> data -> base model -> baseline -> fine-tune -> evaluate -> report.

Each step is a building block from the package; this module only calls them in order and
records what they return in the run folder.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, replace
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list

from tunesmith.augment import Generated, augment
from tunesmith.evaluate.chat import Generator, LocalGenerator, OpenAIGenerator
from tunesmith.config import Config, config_to_yaml, load_config, resolve_path, resolve_paths
from tunesmith.data.encode import encode_example, encode_prompt
from tunesmith.data.examples import Example
from tunesmith.data.io import read_jsonl, write_jsonl
from tunesmith.data.prepare import Splits, prepare_splits
from tunesmith.dataprep import base_path, prepare_data, print_data_summary
from tunesmith.evaluate.evaluator import EvalResult, evaluate_model
from tunesmith.evaluate.generate import generate_batched
from tunesmith.evaluate.human import export_review, read_ratings, summarize
from tunesmith.evaluate.judge import judge_pairwise, judge_rubric, summarize_judge
from tunesmith.evaluate.fairness import counterfactual_probe, group_metrics
from tunesmith.evaluate.forgetting import compare_general, measure_general
from tunesmith.evaluate.metrics import METRICS, TASK_METRICS, check_metric
from tunesmith.errors import UserError
from tunesmith.models.adapters import (BuildContext, apply_adapter, check_adapter, get_method, has_adapter,
                                       init_from_adapter, load_adapter, merge_adapter, method_options, save_adapter,
                                       saved_method)
from tunesmith.models.load import LoadedModel, load_base_model
from tunesmith.models.resolve import resolve_base
from tunesmith.report.build import build_report
from tunesmith.report.markdown import render_markdown
from tunesmith.report.html import render_html
from tunesmith.report.plots import plot_confusion, plot_loss
from tunesmith.registry import note_run
from tunesmith.runs import RunPaths, find_run, new_run, write_status
from tunesmith.train.checkpoint import latest_checkpoint
from tunesmith.train.loop import TrainResult, is_main_process, plan_steps, train_adapter, world_size
from tunesmith.tracking import Trackers, check_trackers, open_trackers, report_summary
from tunesmith.ui import console
from tunesmith.versions import library_versions


def preflight(cfg: Config) -> None:
    """Check what the schema alone cannot (registry names) before any work starts.

    Raises:
        ConfigError: An unknown metric or adapter method.
        UserError: A tracker in train.report_to is not installed.
    """
    check_metric(cfg.objective.task, cfg.objective.primary_metric)
    check_adapter(cfg.adapter)
    check_trackers(cfg.train)


def load_model(cfg: Config, path: Path | None = None) -> LoadedModel:
    """Load the base model from ``path``, or resolve ``model.base`` first."""
    path = path or base_path(cfg)
    method = get_method(cfg.adapter.method)
    extra = method.load_kwargs(method_options(cfg.adapter)) if method.load_kwargs else None
    with console.status(f"Loading base model {cfg.model.base}"):
        lm = load_base_model(path, cfg.model.precision, cfg.model.trust_remote_code, load_kwargs=extra)
    dtype = "bf16 autocast" if lm.autocast_dtype is not None else "fp32"
    console.print(f"Base model {cfg.model.base} loaded from {path} on {lm.device.type} ({dtype})")
    return lm


def evaluate_split(lm: LoadedModel, splits: Splits, cfg: Config, name: str) -> EvalResult:
    """Evaluate the model in ``lm`` on the test split with the run's decoding settings."""
    return evaluate_model(lm, splits.test, task=cfg.objective.task, system_prompt=splits.system_prompt,
                          labels=splits.labels, cfg=cfg.eval, max_seq_len=cfg.model.max_seq_len, name=name,
                          tasks=splits.tasks)


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 2)


def _resolved(cfg: Config, base_dir: Path) -> Config:
    """The config with every path made absolute, as stored in the run."""
    out = cfg.model_copy(deep=True)
    out.project.runs_dir = resolve_path(base_dir, cfg.project.runs_dir).resolve()
    if cfg.data.mix is not None:
        for source in out.data.mix or []:
            paths = [p.resolve() for p in resolve_paths(base_dir, source.path)]
            source.path = paths if isinstance(source.path, list) else paths[0]
    else:  # assigning data.train next to a mix would make it read as given
        train = [p.resolve() for p in resolve_paths(base_dir, cfg.data.train)]
        out.data.train = train if isinstance(cfg.data.train, list) else train[0]
    for key in ("validation", "test", "prepared"):
        value = getattr(cfg.data, key)
        if value is not None:
            setattr(out.data, key, resolve_path(base_dir, value).resolve())
    return out


def general_check(lm: LoadedModel, cfg: Config) -> dict[str, Any]:
    """Perplexity on bundled general text and the general instruction probe, for the model in ``lm``."""
    return measure_general(lm, max_seq_len=cfg.model.max_seq_len, batch_size=cfg.eval.batch_size,
                           max_new_tokens=cfg.eval.forgetting.max_new_tokens)


def fairness_report(lm: LoadedModel, splits: Splits, cfg: Config, tuned: EvalResult) -> dict[str, Any] | None:
    """Per-group metrics and counterfactual probes of the tuned model, when ``eval.fairness`` asks for them."""
    fc, task = cfg.eval.fairness, cfg.objective.task
    if fc.attribute is None and not fc.counterfactual_swaps:
        return None
    metric = cfg.objective.primary_metric if cfg.objective.primary_metric in METRICS else TASK_METRICS[task][0]
    out: dict[str, Any] = {}
    if fc.attribute is not None:
        out["groups"] = group_metrics(tuned.predictions, fc.attribute, metric, task, fc.min_ratio)
    if fc.counterfactual_swaps:
        examples = splits.test[: len(tuned.predictions)]
        out["counterfactual"] = counterfactual_probe(
            lm, examples, tuned.predictions, swaps=fc.counterfactual_swaps, task=task, system_prompt=splits.system_prompt,
            labels=splits.labels, max_seq_len=cfg.model.max_seq_len, max_new_tokens=cfg.eval.max_new_tokens,
            batch_size=cfg.eval.batch_size)
    return out


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


def train_model(lm: LoadedModel, splits: Splits, cfg: Config, run: RunPaths, *, resume: bool = False,
                on_eval: Callable[[int, float], None] | None = None,
                on_log: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Give the model the method's trainable parameters (fresh, or from ``adapter.init_from``), train, and save them.

    Args:
        lm: The loaded base model; its ``model`` is replaced by the trainable one.
        splits: The run's data.
        cfg: The run's config.
        run: The run folder (metrics, checkpoints and the saved adapter go there).
        resume: Continue from the run's latest checkpoint.
        on_eval: Called with (step, validation loss) after each validation.
        on_log: Called with every metrics row.

    Raises:
        UserError: ``adapter.init_from`` names no adapter, or one of another method or shape.
    """
    method = get_method(cfg.adapter.method)
    weights = splits.class_weights or {}
    enc = [replace(encode_example(lm.tokenizer, ex, splits.system_prompt, cfg.model.max_seq_len),
                   weight=weights.get(ex.label or "", 1.0)) for ex in splits.train]
    val = [encode_example(lm.tokenizer, ex, splits.system_prompt, cfg.model.max_seq_len) for ex in splits.validation]
    total, _ = plan_steps(len(enc), cfg.train, world_size())
    torch.manual_seed(cfg.project.seed)
    lm.model = apply_adapter(lm.model, cfg.adapter, BuildContext(total_steps=total, model_path=lm.path))
    if cfg.adapter.init_from and not resume:
        source = adapter_source(cfg.adapter.init_from, cfg.project.runs_dir)
        init_from_adapter(lm.model, cfg.adapter, source)
        console.print(f"Adapter initialised from {source}")

    def _on_eval(step: int, val_loss: float) -> None:
        console.print(f"  step {step}: validation loss {val_loss:.4f}")
        if on_eval is not None:
            on_eval(step, val_loss)

    result = train_adapter(lm, enc, val, cfg.train, seed=cfg.project.seed, method=method, metrics_path=run.metrics,
                           checkpoint_dir=run.checkpoints, resume=resume, on_eval=_on_eval, on_log=on_log)
    if is_main_process():
        save_adapter(lm.model, cfg.adapter, run.adapter)
    return result


def adapter_source(ref: str, runs_dir: Path) -> Path:
    """The adapter folder that ``ref`` names: an adapter folder, a run folder, or a run id in ``runs_dir``.

    Raises:
        UserError: No adapter there.
    """
    if has_adapter(Path(ref)):
        return Path(ref)
    run = find_run(ref, runs_dir)
    if not has_adapter(run.adapter):
        raise UserError(f"run {run.id} has no saved adapter in {run.adapter}")
    return run.adapter


def _stage(run: RunPaths, name: str, compute: Callable[[], Any], to_json: Callable[[Any], Any] = lambda x: x,
           from_json: Callable[[Any], Any] = lambda x: x) -> Any:
    """A step's result, computed once per run: a resumed run reuses what the killed one finished."""
    done = json.loads(run.stages.read_text()) if run.stages.is_file() else {}
    if name in done:
        console.print(f"Reusing the {name} result from before the interruption")
        return from_json(done[name])
    value = compute()
    if is_main_process():
        done[name] = to_json(value)
        run.stages.write_text(json.dumps(done, ensure_ascii=False))
    return value


def _start_run(cfg: Config) -> RunPaths:
    """A new run folder with the config stored; under ``accelerate launch`` the first process creates it for all."""
    if world_size() > 1:
        PartialState(cpu=not torch.cuda.is_available())  # joins the process group accelerate launch set up (gloo on CPU)
        holder = [str(new_run(cfg.project.runs_dir, cfg.objective.task).root) if is_main_process() else None]
        broadcast_object_list(holder, from_process=0)
        run = RunPaths(Path(holder[0]))
    else:
        run = new_run(cfg.project.runs_dir, cfg.objective.task)
    if is_main_process():
        run.config.write_text(config_to_yaml(cfg), encoding="utf-8")
        run.versions.write_text(json.dumps(library_versions(), indent=2))
    return run


@contextmanager
def _recorded(run: RunPaths, cfg: Config, main: bool) -> Iterator[Trackers]:
    """Keep the run's status file, registry row and experiment trackers up to date, whatever happens inside."""
    trackers, outcome = Trackers({}), "failed"
    if main:
        write_status(run, "running")
        note_run(cfg.project.runs_dir, run)
    try:
        if main:
            trackers = open_trackers(cfg, run)
        yield trackers
        outcome = "completed"
    except BaseException as exc:
        if main:
            write_status(run, "failed", error=f"{type(exc).__name__}: {exc}")
            note_run(cfg.project.runs_dir, run)
        raise
    finally:
        trackers.close(outcome)


def _run_data(cfg: Config, base_dir: Path, model_path: Path, run: RunPaths, resumed: bool) -> Splits:
    """The run's data: prepared and stored in the run folder, or read back from there when resuming."""
    if resumed:
        return Splits.load(run.data)
    splits = prepare_data(cfg, base_dir, model_path)
    if is_main_process():
        splits.save(run.data)
        print_data_summary(splits, run.data)
    return splits


def _before_training(lm: LoadedModel, splits: Splits, cfg: Config, run: RunPaths,
                     timings: dict[str, float]) -> tuple[dict[str, Any] | None, EvalResult | None]:
    """The untuned model's general-skill check and baseline evaluation (kept for a resumed run)."""
    general_before = baseline = None
    if cfg.eval.forgetting.enabled:
        with _timed(timings, "general before"):
            general_before = _stage(run, "general before", lambda: general_check(lm, cfg))
    if cfg.eval.baseline:
        with _timed(timings, "baseline eval"):
            baseline = _stage(run, "baseline", lambda: evaluate_split(lm, splits, cfg, "baseline"),
                              asdict, lambda d: EvalResult(**d))
        console.print(f"Baseline {cfg.objective.primary_metric}: {baseline.metrics[cfg.objective.primary_metric]:.4f}")
    return general_before, baseline


def _after_training(lm: LoadedModel, splits: Splits, cfg: Config, run: RunPaths, baseline: EvalResult | None,
                    general_before: dict[str, Any] | None, result: TrainResult,
                    timings: dict[str, float]) -> dict[str, Any]:
    """Evaluate the tuned model (task, fairness, forgetting) and write the reports."""
    with _timed(timings, "tuned eval"):
        tuned = evaluate_split(lm, splits, cfg, "tuned")
    fairness = fairness_report(lm, splits, cfg, tuned)
    forgetting = None
    if general_before is not None:
        with _timed(timings, "general after"):
            forgetting = compare_general(general_before, general_check(lm, cfg), cfg.eval.forgetting)
        for warning in forgetting["warnings"]:
            console.print(f"[yellow]warning:[/] {warning}")
    return write_report(run, cfg, lm, splits, baseline, tuned, result, timings,
                        {"fairness": fairness, "forgetting": forgetting})


def run_pipeline(cfg: Config, base_dir: Path, *, on_eval: Callable[[int, float], None] | None = None,
                 on_log: Callable[[dict[str, Any]], None] | None = None, resume: RunPaths | None = None,
                 on_start: Callable[[RunPaths], None] | None = None) -> RunPaths:
    """Run every step for one project and return the run folder.

    Under ``accelerate launch`` every process runs this; the first one creates the run folder,
    evaluates and reports, and all of them train together.

    Args:
        cfg: The validated project config.
        base_dir: The folder relative paths in the config are resolved against.
        on_eval: Also called with (step, validation loss) after each validation; an exception it
            raises ends the run (a sweep prunes trials this way).
        on_log: Also called with every row of ``metrics.jsonl``.
        resume: A run that was interrupted: its stored data and finished steps are reused and
            training continues from its latest checkpoint (``cfg`` is then the run's stored config).
        on_start: Called with the run folder once it exists, before any work (a sweep records its trial there).

    Returns:
        The run's paths; ``report.md`` and ``report.json`` are written.

    Raises:
        UserError: Bad config, data or model (exit code 2).
    """
    preflight(cfg)
    main = is_main_process()
    if resume is None:
        cfg = _resolved(cfg, base_dir)
    run = resume or _start_run(cfg)
    if main:
        console.print(f"{'Resuming run' if resume else 'Run'} [bold]{run.id}[/] in {run.root}")
    timings: dict[str, float] = {}
    with _recorded(run, cfg, main) as trackers:
        if on_start is not None:
            on_start(run)
        with _timed(timings, "resolve model"):
            path = base_path(cfg)
        with _timed(timings, "data"):
            splits = _run_data(cfg, base_dir, path, run, resumed=resume is not None)
        with _timed(timings, "load model"):
            lm = load_model(cfg, path)
        general_before, baseline = _before_training(lm, splits, cfg, run, timings) if main else (None, None)
        with _timed(timings, "train"):
            resumable = resume is not None and latest_checkpoint(run.checkpoints) is not None
            result = train_model(lm, splits, cfg, run, resume=resumable, on_eval=on_eval, on_log=trackers.hook(on_log))
        if not main:  # the other training processes are done; the first one evaluates and reports
            return run
        report = _after_training(lm, splits, cfg, run, baseline, general_before, result, timings)
        trackers.log_summary(*report_summary(report))
    write_status(run, "completed", verdict=report["verdict"])
    note_run(cfg.project.runs_dir, run)
    return run


def make_generator(cfg: Config, generator: str, endpoint: str | None, model: str | None,
                   api_key_env: str) -> Generator:
    """The generator named on the command line: ``base``, a local model folder, or ``openai`` (with endpoint and model).

    Raises:
        UserError: ``openai`` without an endpoint or model.
    """
    if generator == "openai":
        if not endpoint or not model:
            raise UserError("--generator openai needs --endpoint URL and --model NAME")
        return OpenAIGenerator(endpoint, model, api_key_env)
    path = base_path(cfg) if generator == "base" else resolve_base(generator, status=console.print)
    lm = load_base_model(path, cfg.model.precision, cfg.model.trust_remote_code)
    return LocalGenerator(lm, name=cfg.model.base if generator == "base" else generator)


def augment_data(cfg: Config, base_dir: Path, generator: Generator, out: Path, *, paraphrases: int, new: int,
                 temperature: float, max_seeds: int | None, append: bool) -> Generated:
    """Generate rows from the training split and write them (``needs_review: true``) to ``out``.

    Dropped candidates go to ``<out>.filtered.jsonl`` with their reason.

    Raises:
        UserError: ``out`` exists and ``append`` is off, or nothing was asked for.
    """
    if not paraphrases and not new:
        raise UserError("ask for --paraphrases N (per seed) and/or --new N")
    if out.exists() and not append:
        raise UserError(f"{out} exists: pass --append to add to it, or choose another --out")
    if cfg.data.mix is not None:
        raise UserError("data augment writes rows in one dataset's format; with data.mix, run it with "
                        "--set data.mix=null --set data.train=SOURCE (and that source's data.format/columns)")
    splits = prepare_splits(cfg, base_dir, require_test=False)
    seeds = splits.train
    if max_seeds is not None and len(seeds) > max_seeds:
        seeds = random.Random(cfg.project.seed).sample(seeds, max_seeds)
    result = augment(seeds, generator, splits.format, cfg.data.columns, paraphrases=paraphrases, new=new,
                     seed=cfg.project.seed, temperature=temperature, system_prompt=splits.system_prompt, dedup=cfg.data.dedup)
    previous = read_jsonl(out) if out.exists() else []
    write_jsonl(out, previous + result.rows)
    write_jsonl(out.with_name(out.stem + ".filtered.jsonl"), result.filtered)
    return result


def export_human_review(run: RunPaths, seed: int) -> tuple[Path, Path, Path]:
    """Write the blind review sheet of a run's baseline and tuned outputs into ``run/review/``.

    Raises:
        UserError: The run has no baseline predictions to compare with.
    """
    if not (run.predictions / "baseline.jsonl").is_file():
        raise UserError(f"run {run.id} has no baseline predictions (eval.baseline was off)")
    return export_review(run.predictions / "baseline.jsonl", run.predictions / "tuned.jsonl", run.root / "review", seed=seed)


def import_human_review(run: RunPaths, cfg: Config, sheets: list[Path]) -> dict[str, Any]:
    """Un-blind raters' sheets, summarise them, and add the result to the run's reports.

    Raises:
        UserError: The run has no review key (export first), or a sheet is invalid.
    """
    key = run.root / "review" / "review_key.json"
    if not key.is_file():
        raise UserError(f"run {run.id} has no review key: run `tunesmith review export --run {run.id}` first")
    criteria = json.loads(key.read_text())["criteria"]
    ratings = read_ratings(sheets, key)
    write_jsonl(run.root / "review" / "ratings.jsonl", ratings)
    summary = summarize(ratings, criteria, seed=cfg.project.seed)
    _add_to_report(run, cfg, "human_review", summary)
    return summary


def judge_run(run: RunPaths, cfg: Config, judge: Generator, *, rubric: bool, pairwise: bool,
              max_items: int | None) -> dict[str, Any]:
    """LLM-as-judge on a run's test outputs; every judgement goes to ``judge.jsonl``, the summary to the reports.

    Raises:
        UserError: Pairwise judging without baseline predictions.
    """
    tuned = read_jsonl(run.predictions / "tuned.jsonl")[:max_items]
    has_base = (run.predictions / "baseline.jsonl").is_file()
    if pairwise and not has_base:
        raise UserError(f"run {run.id} has no baseline predictions to compare with (eval.baseline was off)")
    baseline = read_jsonl(run.predictions / "baseline.jsonl")[:max_items] if has_base else []
    criteria = cfg.eval.judge_criteria
    with console.status(f"Judging {len(tuned)} outputs with {judge.name}"):
        scored = judge_rubric(judge, tuned, criteria, cfg.project.seed) if rubric else None
        pairs = judge_pairwise(judge, baseline, tuned, cfg.project.seed) if pairwise else None
    write_jsonl(run.root / "judge.jsonl", [{"kind": "rubric", **r} for r in scored or []] +
                [{"kind": "pairwise", **p} for p in pairs or []])
    ratings = run.root / "review" / "ratings.jsonl"
    human = read_jsonl(ratings) if ratings.is_file() else None
    summary = {"judge": judge.name, "items": len(tuned), "criteria": criteria,
               **summarize_judge(scored, pairs, criteria, human)}
    _add_to_report(run, cfg, "llm_judge", summary)
    return summary


def _add_to_report(run: RunPaths, cfg: Config, key: str, value: dict[str, Any]) -> None:
    """Add a section to ``report.json`` and render the markdown and HTML reports again."""
    report = json.loads(run.report_json.read_text())
    report[key] = value
    run.report_json.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    tuned = read_jsonl(run.predictions / "tuned.jsonl")
    base_path_ = run.predictions / "baseline.jsonl"
    baseline = read_jsonl(base_path_) if base_path_.is_file() else []
    run.report_md.write_text(render_markdown(report, tuned, baseline, cfg.eval.show_examples), encoding="utf-8")
    run.report_html.write_text(render_html(report, {"confusion": run.confusion_plot, "loss": run.loss_plot}), encoding="utf-8")


def load_run(ref: str, runs_dir: Path) -> tuple[RunPaths, Config, Splits]:
    """Find a run and read its stored config and data splits."""
    run = find_run(ref, runs_dir)
    cfg, _ = load_config(run.config)
    return run, cfg, Splits.load(run.data)


def evaluate_run(run: RunPaths, cfg: Config, splits: Splits, *, base: bool) -> EvalResult:
    """Re-evaluate a run's tuned model (or, with ``base``, the untuned base) on its test split.

    Raises:
        UserError: The run has no saved adapter.
    """
    lm = load_model(cfg)
    if not base:
        lm.model = load_adapter(lm.model, adapter_source(str(run.root), cfg.project.runs_dir))
    return evaluate_split(lm, splits, cfg, "base" if base else "tuned")


def evaluate_base(cfg: Config, base_dir: Path) -> EvalResult:
    """Evaluate the untuned base model on the test split the config produces, without a run."""
    preflight(cfg)
    path = base_path(cfg)
    splits = prepare_data(cfg, base_dir, path)
    return evaluate_split(load_model(cfg, path), splits, cfg, "base")


def chat_once(run: RunPaths, cfg: Config, splits: Splits, prompt: str, max_new_tokens: int | None = None) -> str:
    """Answer one prompt with the run's tuned model, rendered as training saw it.

    Raises:
        UserError: The run has no saved adapter.
    """
    source = adapter_source(str(run.root), cfg.project.runs_dir)
    lm = load_model(cfg)
    lm.model = load_adapter(lm.model, source)
    ids = encode_prompt(lm.tokenizer, Example(id="chat", prompt=prompt, target=""), splits.system_prompt, cfg.model.max_seq_len)
    return generate_batched(lm, [ids], max_new_tokens or cfg.eval.max_new_tokens, 1, label="chat")[0]


def export_merged(run: RunPaths, cfg: Config, out: Path) -> dict[str, Any]:
    """Fold a run's trained adapter into the base weights and save a plain model folder (safetensors + tokenizer).

    The base is loaded in full precision, also for a QLoRA run, so the merged model needs no
    bitsandbytes; its greedy outputs match the adapter model's (a test checks it).

    Raises:
        UserError: ``out`` is not empty, the run has no adapter, or its method cannot be merged.
    """
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty; choose a new folder for the merged model")
    source = adapter_source(str(run.root), cfg.project.runs_dir)
    method = saved_method(source)
    lm = load_base_model(base_path(cfg), "fp32", cfg.model.trust_remote_code)
    with console.status(f"Merging the {method} adapter of run {run.id}"):
        merged = merge_adapter(load_adapter(lm.model, source), method)
        out.mkdir(parents=True, exist_ok=True)
        merged.save_pretrained(out, safe_serialization=True)
        lm.tokenizer.save_pretrained(out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"run": run.id, "method": method, "out": str(out), "bytes": size}
