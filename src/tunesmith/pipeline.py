"""The end-to-end pipeline: objective -> data -> base model -> baseline -> fine-tune -> evaluate -> report.

Each step is a building block from the package; this module only calls them in order and
records what they return in the run folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from tunesmith.config import Config, config_to_yaml, load_config, resolve_path, resolve_paths
from tunesmith.data.encode import encode_example, encode_prompt
from tunesmith.data.examples import Example
from tunesmith.data.io import write_jsonl
from tunesmith.data.prepare import Splits, prepare_splits
from tunesmith.evaluate.evaluator import EvalResult, evaluate_model
from tunesmith.evaluate.generate import generate_greedy
from tunesmith.evaluate.metrics import check_metric
from tunesmith.errors import UserError
from tunesmith.models.adapters import apply_adapter, check_adapter_method, load_adapter
from tunesmith.models.load import LoadedModel, load_base_model
from tunesmith.models.resolve import resolve_base
from tunesmith.report.build import build_report
from tunesmith.report.markdown import render_markdown
from tunesmith.report.plots import plot_loss
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


def load_model(cfg: Config) -> LoadedModel:
    """Resolve ``model.base`` to a local checkpoint and load it."""
    with console.status(f"Loading base model {cfg.model.base}"):
        path = resolve_base(cfg.model.base, status=console.print)
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
    for key in ("validation", "test"):
        value = getattr(cfg.data, key)
        if value is not None:
            setattr(out.data, key, resolve_path(base_dir, value).resolve())
    return out


def _print_data_summary(splits: Splits, folder: Path) -> None:
    acc = splits.accounting()
    console.print(f"Data: format {splits.format}; {acc['rows_read']} rows read, {acc['kept']} kept "
                  f"{splits.counts()}, {acc['rejected']} set aside, {sum(acc['removed'].values())} removed")
    for kind, n in acc["rejected_by_reason"].items():
        console.print(f"  set aside {n}: {kind} (see {folder / 'rejected.jsonl'})")
    for rule, n in acc["removed"].items():
        console.print(f"  removed {n}: {rule} (see {folder / 'removed.jsonl'})")
    if acc["pii"]:
        console.print(f"  personal data and secrets ({acc['pii_policy']}): {acc['pii']}")
    if acc["conflicts"]:
        console.print(f"  {acc['conflicts']} inputs appear with different answers (conflicts)")
    for warning in acc["warnings"]:
        console.print(f"  warning: {warning}")


def write_report(run: RunPaths, cfg: Config, lm: LoadedModel, splits: Splits, baseline: EvalResult | None,
                 tuned: EvalResult, result: TrainResult | None, timings: dict[str, float]) -> dict[str, Any]:
    """Write predictions, ``report.json``, ``report.md`` and ``loss.png`` into the run folder."""
    if baseline is not None:
        write_jsonl(run.predictions / "baseline.jsonl", baseline.predictions)
    write_jsonl(run.predictions / "tuned.jsonl", tuned.predictions)
    model_info = {"base": cfg.model.base, "path": str(lm.path), "device": lm.device.type,
                  "precision": "bf16 autocast" if lm.autocast_dtype is not None else "fp32"}
    manifest = splits.manifest()
    data = {**splits.counts(), "format": splits.format, "labels": splits.labels,
            "sha256": {k: v["sha256"] for k, v in manifest["splits"].items()}, "accounting": splits.accounting()}
    report = build_report(cfg=cfg, run_id=run.id, model_info=model_info, data=data, baseline=baseline,
                          tuned=tuned, train=result, timings=timings)
    run.report_json.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    if result is not None:
        plot_loss(result.history, run.loss_plot, title=f"{cfg.project.name}: loss")
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
        with _timed(timings, "data"):
            splits = prepare_splits(cfg, base_dir)
            splits.save(run.data)
        _print_data_summary(splits, run.data)
        with _timed(timings, "load model"):
            lm = load_model(cfg)
        baseline = None
        if cfg.eval.baseline:
            with _timed(timings, "baseline eval"):
                baseline = evaluate_split(lm, splits, cfg, "baseline")
            console.print(f"Baseline {cfg.objective.primary_metric}: {baseline.metrics[cfg.objective.primary_metric]:.4f}")
        with _timed(timings, "train"):
            torch.manual_seed(cfg.project.seed)
            lm.model = apply_adapter(lm.model, cfg.adapter)
            enc = [encode_example(lm.tokenizer, ex, splits.system_prompt, cfg.model.max_seq_len) for ex in splits.train]
            val = [encode_example(lm.tokenizer, ex, splits.system_prompt, cfg.model.max_seq_len) for ex in splits.validation]
            result = train_adapter(lm, enc, val, cfg.train, seed=cfg.project.seed, metrics_path=run.metrics,
                                   on_eval=lambda s, v: console.print(f"  step {s}: validation loss {v:.4f}"))
            lm.model.save_pretrained(run.adapter)
        with _timed(timings, "tuned eval"):
            tuned = evaluate_split(lm, splits, cfg, "tuned")
        report = write_report(run, cfg, lm, splits, baseline, tuned, result, timings)
    except BaseException as exc:
        write_status(run, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    write_status(run, "completed", verdict=report["verdict"])
    return run


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
    splits = prepare_splits(cfg, base_dir)
    return evaluate_split(load_model(cfg), splits, cfg, "base")


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
    return generate_greedy(lm, [ids], max_new_tokens or cfg.eval.max_new_tokens, 1, label="chat")[0]
