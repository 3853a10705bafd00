"""The end-to-end pipeline: objective -> data -> base model -> baseline -> fine-tune -> evaluate -> report.

Each step is a building block from the package; this module only calls them in order and
records what they return in the run folder.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import replace
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

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
from tunesmith.models.adapters import apply_adapter, check_adapter_method, load_adapter
from tunesmith.models.load import LoadedModel, load_base_model
from tunesmith.models.resolve import resolve_base
from tunesmith.report.build import build_report
from tunesmith.report.markdown import render_markdown
from tunesmith.report.html import render_html
from tunesmith.report.plots import plot_confusion, plot_loss
from tunesmith.runs import RunPaths, find_run, new_run, write_status
from tunesmith.train.loop import TrainResult, train_adapter
from tunesmith.ui import console


def preflight(cfg: Config) -> None:
    """Check what the schema alone cannot (registry names) before any work starts.

    Raises:
        ConfigError: An unknown metric or adapter method.
    """
    check_metric(cfg.objective.task, cfg.objective.primary_metric)
    check_adapter_method(cfg.adapter)


def load_model(cfg: Config, path: Path | None = None) -> LoadedModel:
    """Load the base model from ``path``, or resolve ``model.base`` first."""
    path = path or base_path(cfg)
    with console.status(f"Loading base model {cfg.model.base}"):
        lm = load_base_model(path, cfg.model.precision, cfg.model.trust_remote_code)
    dtype = "bf16 autocast" if lm.autocast_dtype is not None else "fp32"
    console.print(f"Base model {cfg.model.base} loaded from {path} on {lm.device.type} ({dtype})")
    return lm


def evaluate_split(lm: LoadedModel, splits: Splits, cfg: Config, name: str) -> EvalResult:
    """Evaluate the model in ``lm`` on the test split with the run's decoding settings."""
    return evaluate_model(lm, splits.test, task=cfg.objective.task, system_prompt=splits.system_prompt,
                          labels=splits.labels, cfg=cfg.eval, max_seq_len=cfg.model.max_seq_len, name=name)


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 2)


def _resolved(cfg: Config, base_dir: Path) -> Config:
    """The config with every path made absolute, as stored in the run."""
    out = cfg.model_copy(deep=True)
    out.project.runs_dir = resolve_path(base_dir, cfg.project.runs_dir).resolve()
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
            "lengths": splits.lengths, "balance": splits.balance}
    report = build_report(cfg=cfg, run_id=run.id, model_info=model_info, data=data, baseline=baseline,
                          tuned=tuned, train=result, timings=timings)
    report.update({k: v for k, v in (extra or {}).items() if v is not None})
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


def run_pipeline(cfg: Config, base_dir: Path) -> RunPaths:
    """Run every step for one project and return the run folder.

    Args:
        cfg: The validated project config.
        base_dir: The folder relative paths in the config are resolved against.

    Returns:
        The run's paths; ``report.md`` and ``report.json`` are written.

    Raises:
        UserError: Bad config, data or model (exit code 2).
    """
    preflight(cfg)
    cfg = _resolved(cfg, base_dir)
    run = new_run(cfg.project.runs_dir, cfg.objective.task)
    run.config.write_text(config_to_yaml(cfg), encoding="utf-8")
    write_status(run, "running")
    console.print(f"Run [bold]{run.id}[/] in {run.root}")
    timings: dict[str, float] = {}
    try:
        with _timed(timings, "resolve model"):
            path = base_path(cfg)
        with _timed(timings, "data"):
            splits = prepare_data(cfg, base_dir, path)
            splits.save(run.data)
        print_data_summary(splits, run.data)
        with _timed(timings, "load model"):
            lm = load_model(cfg, path)
        general_before = None
        if cfg.eval.forgetting.enabled:
            with _timed(timings, "general before"):
                general_before = general_check(lm, cfg)
        baseline = None
        if cfg.eval.baseline:
            with _timed(timings, "baseline eval"):
                baseline = evaluate_split(lm, splits, cfg, "baseline")
            console.print(f"Baseline {cfg.objective.primary_metric}: {baseline.metrics[cfg.objective.primary_metric]:.4f}")
        with _timed(timings, "train"):
            torch.manual_seed(cfg.project.seed)
            lm.model = apply_adapter(lm.model, cfg.adapter)
            weights = splits.class_weights or {}
            enc = [replace(encode_example(lm.tokenizer, ex, splits.system_prompt, cfg.model.max_seq_len),
                           weight=weights.get(ex.label or "", 1.0)) for ex in splits.train]
            val = [encode_example(lm.tokenizer, ex, splits.system_prompt, cfg.model.max_seq_len) for ex in splits.validation]
            result = train_adapter(lm, enc, val, cfg.train, seed=cfg.project.seed, metrics_path=run.metrics,
                                   on_eval=lambda s, v: console.print(f"  step {s}: validation loss {v:.4f}"))
            lm.model.save_pretrained(run.adapter)
        with _timed(timings, "tuned eval"):
            tuned = evaluate_split(lm, splits, cfg, "tuned")
        fairness = fairness_report(lm, splits, cfg, tuned)
        forgetting = None
        if general_before is not None:
            with _timed(timings, "general after"):
                forgetting = compare_general(general_before, general_check(lm, cfg), cfg.eval.forgetting)
            for warning in forgetting["warnings"]:
                console.print(f"[yellow]warning:[/] {warning}")
        report = write_report(run, cfg, lm, splits, baseline, tuned, result, timings,
                              {"fairness": fairness, "forgetting": forgetting})
    except BaseException as exc:
        write_status(run, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    write_status(run, "completed", verdict=report["verdict"])
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
        if not (run.adapter / "adapter_config.json").is_file():
            raise UserError(f"run {run.id} has no saved adapter in {run.adapter}")
        lm.model = load_adapter(lm.model, run.adapter)
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
    if not (run.adapter / "adapter_config.json").is_file():
        raise UserError(f"run {run.id} has no saved adapter in {run.adapter}")
    lm = load_model(cfg)
    lm.model = load_adapter(lm.model, run.adapter)
    ids = encode_prompt(lm.tokenizer, Example(id="chat", prompt=prompt, target=""), splits.system_prompt, cfg.model.max_seq_len)
    return generate_batched(lm, [ids], max_new_tokens or cfg.eval.max_new_tokens, 1, label="chat")[0]
