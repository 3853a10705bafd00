"""The fine-tuning recipe: objective -> data -> base model -> baseline -> fine-tune -> evaluate -> report.

:func:`run_pipeline` calls the steps (:mod:`tunesmith.steps`) in order and records what they
return in the run folder; the steps themselves are building blocks other recipes and services share.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list

from tunesmith.config import Config, config_to_yaml, resolve_path, resolve_paths
from tunesmith.console import console
from tunesmith.data.prepare import Splits
from tunesmith.evaluate.evaluator import EvalResult
from tunesmith.evaluate.forgetting import compare_general
from tunesmith.models.load import LoadedModel
from tunesmith.runs.folder import RunPaths, new_run, write_status
from tunesmith.runs.store import note_run
from tunesmith.steps.data import base_path, check_data_files, prepare_data, print_data_summary
from tunesmith.steps.evaluate import evaluate_split, fairness_report, general_check
from tunesmith.steps.model import load_model, preflight
from tunesmith.report.schema import RunReport
from tunesmith.steps.report import write_report
from tunesmith.steps.train import train_model
from tunesmith.tracking import Trackers, open_trackers, report_summary
from tunesmith.train.checkpoint import latest_checkpoint
from tunesmith.train.loop import TrainResult, is_main_process, world_size
from tunesmith.versions import library_versions


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
    if cfg.eval.forgetting.enabled and cfg.adapter.head == "generate":  # a head model no longer generates text
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
                    timings: dict[str, float]) -> RunReport:
    """Evaluate the tuned model (task, fairness, forgetting) and write the reports."""
    with _timed(timings, "tuned eval"):
        tuned = evaluate_split(lm, splits, cfg, "tuned")
    fairness = fairness_report(lm, splits, cfg, tuned)
    forgetting = None
    if general_before is not None:
        with _timed(timings, "general after"):
            forgetting = compare_general(general_before, general_check(lm, cfg), cfg.eval.forgetting,
                                         level=cfg.eval.confidence, resamples=cfg.eval.bootstrap_resamples,
                                         seed=cfg.project.seed)
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
        check_data_files(cfg)
    timings: dict[str, float] = {}
    with _timed(timings, "resolve model"):  # a missing file or a bad model.base leaves no run folder behind
        path = base_path(cfg)
    run = resume or _start_run(cfg)
    if main:
        console.print(f"{'Resuming run' if resume else 'Run'} [bold]{run.id}[/] in {run.root}")
    with _recorded(run, cfg, main) as trackers:
        if on_start is not None:
            on_start(run)
        with _timed(timings, "data"):
            splits = _run_data(cfg, base_dir, path, run, resumed=resume is not None)
        with _timed(timings, "load model"):
            lm = load_model(cfg, path)
        general_before, baseline = _before_training(lm, splits, cfg, run, timings) if main else (None, None)
        if cfg.adapter.head == "classify":  # the baseline answered generatively; the head trains on the same backbone
            with _timed(timings, "load model with head"):
                lm = load_model(cfg, path, labels=splits.labels)
        with _timed(timings, "train"):
            resumable = resume is not None and latest_checkpoint(run.checkpoints) is not None
            result = train_model(lm, splits, cfg, run, resume=resumable, on_eval=on_eval, on_log=trackers.hook(on_log))
        if not main:  # the other training processes are done; the first one evaluates and reports
            return run
        report = _after_training(lm, splits, cfg, run, baseline, general_before, result, timings)
        trackers.log_summary(*report_summary(report))
    write_status(run, "completed", verdict=report.verdict)
    note_run(cfg.project.runs_dir, run)
    return run
