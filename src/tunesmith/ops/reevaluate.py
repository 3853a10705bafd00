"""Evaluating again: a finished run's tuned model or its base, or a project's base model without a run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tunesmith.config import Config, load_config
from tunesmith.data.examples import Example
from tunesmith.data.prepare import Splits
from tunesmith.evaluate.evaluator import EvalResult
from tunesmith.runs.folder import RunPaths
from tunesmith.runs.store import find_known_run
from tunesmith.steps.data import base_path, prepare_data
from tunesmith.steps.evaluate import evaluate_split
from tunesmith.steps.model import load_model, load_tuned, preflight


def load_run(ref: str, runs_dir: Path) -> tuple[RunPaths, Config, Splits]:
    """Find a run (in ``runs_dir``, or by its id in any runs folder tunesmith knows) and read its config and splits."""
    run = find_known_run(ref, runs_dir)
    cfg, _ = load_config(run.config, stored=True)
    return run, cfg, Splits.load(run.data)


def evaluate_run(run: RunPaths, cfg: Config, splits: Splits, *, base: bool) -> EvalResult:
    """Re-evaluate a run's tuned model (or, with ``base``, the untuned base) on its test split.

    Raises:
        UserError: The run has no saved adapter.
    """
    lm = load_model(cfg) if base else load_tuned(cfg, run, splits.labels)
    return evaluate_split(lm, splits, cfg, "base" if base else "tuned")


def evaluate_base(cfg: Config, base_dir: Path) -> EvalResult:
    """Evaluate the untuned base model on the test split the config produces, without a run."""
    preflight(cfg)
    path = base_path(cfg)
    splits = prepare_data(cfg, base_dir, path)
    return evaluate_split(load_model(cfg, path), splits, cfg, "base")


def evaluate_run_on(run: RunPaths, cfg: Config, splits: Splits, examples: list[Example], name: str) -> EvalResult:
    """A run's tuned model on other examples (a fresh test set), answering as it was evaluated: its system
    prompt, labels and decoding. Labels the run never had are wrong answers for it, as they are in production.

    Raises:
        UserError: The run has no saved adapter.
    """
    lm = load_tuned(cfg, run, splits.labels)
    return evaluate_split(lm, replace(splits, test=list(examples)), cfg, name)
