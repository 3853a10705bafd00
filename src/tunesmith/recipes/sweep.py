"""Hyperparameter search: an optuna study whose every trial is a complete, recorded tunesmith run.

The study lives in ``<project.runs_dir>/sweeps/<name>/study.db`` (SQLite). Each trial copies the
project config, sets the values the TPE sampler suggests for the keys of ``sweep.space``, validates
the whole config again and runs the pipeline on it; the trial's value is its run's best validation
loss, and the median pruner may stop it at a validation. Running the same sweep again continues the
study: ``trials`` counts finished (complete or pruned) trials, so finished ones are never redone,
and a trial that a killed process left running is marked failed and its slot run again.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import optuna
from filelock import FileLock, Timeout
from optuna.trial import FrozenTrial, Trial, TrialState
from pydantic import ValidationError

from tunesmith.config import (Config, ParamSpace, config_to_yaml, format_validation_error, load_config, resolve_path,
                              set_key)
from tunesmith.errors import ConfigError, UserError
from tunesmith.recipes.finetune import run_pipeline
from tunesmith.report.schema import read_report
from tunesmith.runs.store import note_run
from tunesmith.runs.folder import RunPaths, write_status
from tunesmith.console import console

#: Set on every trial besides the searched keys. The untuned baseline gives the same figures in every trial and
#: the forgetting check plays no part in the objective, so repeating them only costs time (about 50 s a trial on
#: the quickstart). The tuned evaluation stays, so that each trial is a complete run with a report.
TRIAL_OVERRIDES: dict[str, Any] = {"eval.baseline": False, "eval.forgetting.enabled": False}

_STATES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
           TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def study_name(cfg: Config) -> str:
    """``sweep.name``, or ``project.name`` made safe for a folder name."""
    return cfg.sweep.name or re.sub(r"[^A-Za-z0-9_.-]+", "-", cfg.project.name).strip("-.") or "sweep"


def sweep_folder(cfg: Config, base_dir: Path) -> Path:
    """The study's folder: ``<project.runs_dir>/sweeps/<name>``, absolute."""
    return resolve_path(base_dir, cfg.project.runs_dir).resolve() / "sweeps" / study_name(cfg)


def _is_int_key(key: str) -> bool:
    section, name = key.split(".")
    annotation = Config.model_fields[section].annotation.model_fields[name].annotation
    return annotation is int or (int in get_args(annotation) and float not in get_args(annotation))


def with_values(cfg: Config, values: dict[str, Any]) -> Config:
    """A copy of ``cfg`` with dotted keys set, the whole config validated again (cross-key rules included).

    Raises:
        ValidationError: A value the schema refuses.
    """
    raw = cfg.model_dump()
    for key, value in values.items():
        set_key(raw, key.split("."), value, f"sweep.space.{key}")
    return Config.model_validate(raw)


def check_sweep(cfg: Config) -> None:
    """Check, before any work, that the search space is usable and trials can be scored.

    Every bound and choice is tried in the project's own config, so that a value the schema would
    refuse in trial 7 is refused now.

    Raises:
        ConfigError: An empty space, a bound or choice the key does not accept, or no validation split.
    """
    if not cfg.sweep.space:
        raise ConfigError("sweep.space is empty: give at least one key to search, e.g. "
                          "sweep: {space: {train.lr: {low: 1.0e-4, high: 3.0e-3, log: true}}}")
    for key, ps in cfg.sweep.space.items():
        named = ({f"choices[{i}]": v for i, v in enumerate(ps.choices)} if ps.choices is not None
                 else {"low": ps.low, "high": ps.high})
        for where, value in named.items():
            try:
                with_values(cfg, {key: value})
            except ValidationError as exc:
                raise ConfigError(f"sweep.space.{key}.{where}: {value!r} is not a valid {key}: "
                                  f"{exc.errors()[0]['msg']}") from None
        if ps.step is not None and _is_int_key(key) and ps.step != int(ps.step):
            raise ConfigError(f"sweep.space.{key}.step: {key} is a whole number, so the step must be one "
                              f"(got {ps.step})")
    if cfg.data.validation is None and cfg.data.prepared is None and cfg.data.split.validation == 0:
        raise ConfigError("data.split.validation is 0, but a sweep scores each trial by its validation loss: "
                          "give the validation split a share (e.g. 0.1)")


def suggest(trial: Trial, space: dict[str, ParamSpace]) -> dict[str, Any]:
    """Ask the trial for a value of every key of the space (integers for integer keys)."""
    params: dict[str, Any] = {}
    for key, ps in space.items():
        if ps.choices is not None:
            params[key] = trial.suggest_categorical(key, ps.choices)
        elif _is_int_key(key):
            params[key] = trial.suggest_int(key, int(ps.low), int(ps.high), step=int(ps.step or 1), log=ps.log)
        else:
            params[key] = trial.suggest_float(key, float(ps.low), float(ps.high), step=ps.step, log=ps.log)
    return params


def pruning_callback(trial: Trial) -> Callable[[int, float], None]:
    """The ``on_eval`` hook of a trial's run: report each validation loss, stop the run when the pruner says so.

    Raises:
        optuna.TrialPruned: From the returned function, when the trial should stop.
    """

    def on_eval(step: int, val_loss: float) -> None:
        trial.report(float(val_loss), step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}: validation loss {val_loss:.4f} is worse than the "
                                     "median of earlier trials at this step")

    return on_eval


def _objective_value(run: RunPaths) -> float:
    """The run's best validation loss; infinity when training diverged (no finite validation loss).

    Raises:
        UserError: The run had no validation examples to score it by.
    """
    report = read_report(run.report_json)
    best = report.train.best_val_loss if report.train else None
    if best is not None:
        return float(best)
    if not report.data.validation:
        raise UserError(f"run {run.id} has no validation examples, and a sweep scores trials by validation loss: "
                        "give the data a validation split")
    return math.inf


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The complete trial with the lowest finite value (a diverged trial is nobody's best)."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if math.isfinite(t.value)]
    return min(done, key=lambda t: t.value) if done else None


def _run_trial(study: optuna.Study, trial: Trial, cfg: Config, base_dir: Path, name: str, label: str) -> None:
    """Run one trial's pipeline and tell the study how it ended (failures are told, then raised)."""
    started: list[RunPaths] = []

    def on_start(run: RunPaths) -> None:
        started.append(run)
        trial.set_user_attr("run_id", run.id)
        trial.set_user_attr("run_dir", str(run.root))
        write_status(run, "running", sweep=name, trial=trial.number)
        note_run(run.root.parent, run)  # the registry reads the sweep tag from status.json

    try:
        params = suggest(trial, cfg.sweep.space)
        console.print(f"[bold]{label}[/]: {', '.join(f'{k}={_fmt(v)}' for k, v in params.items())}")
        try:
            trial_cfg = with_values(cfg, {**params, **TRIAL_OVERRIDES})
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, f"sweep trial {trial.number}")) from None
        run = run_pipeline(trial_cfg, base_dir, on_eval=pruning_callback(trial), on_start=on_start)
        value = _objective_value(run)
    except optuna.TrialPruned as exc:
        study.tell(trial, state=TrialState.PRUNED)
        if started:
            write_status(started[0], "pruned", error=None, reason=str(exc))
            note_run(started[0].root.parent, started[0])
        console.print(f"{label}: {', '.join(f'{k}={_fmt(v)}' for k, v in trial.params.items())} → {exc}")
        return
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)
        raise
    study.tell(trial, value)
    best = _best_trial(study)
    outcome = f"best val loss {value:.4f}" if math.isfinite(value) else "diverged (no finite validation loss)"
    so_far = f" (best so far {best.value:.4f}, trial {best.number})" if best is not None else ""
    console.print(f"{label}: {', '.join(f'{k}={_fmt(v)}' for k, v in params.items())} → {outcome}{so_far}")


def _fail_orphans(study: optuna.Study) -> None:
    """Mark trials that a killed sweep left running as failed (the lock guarantees no live process owns them)."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)
        run_dir = t.user_attrs.get("run_dir")
        status = Path(run_dir) / "status.json" if run_dir else None
        if status is not None and status.is_file() and json.loads(status.read_text()).get("status") == "running":
            run = RunPaths(Path(run_dir))
            write_status(run, "failed", error="interrupted: the sweep's process ended during this trial")
            note_run(run.root.parent, run)
        console.print(f"Trial {t.number} was left running by an interrupted sweep: marked failed, its slot runs again")


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per trial: number, state, params, value (None unless finite), run id, pruning step, seconds."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        duration = t.duration.total_seconds() if t.duration is not None else None
        rows.append({"trial": t.number, "state": _STATES.get(t.state, t.state.name.lower()), "params": t.params,
                     "value": _finite(t.value), "run_id": t.user_attrs.get("run_id"),
                     "pruned_at_step": t.last_step if t.state == TrialState.PRUNED else None,
                     "seconds": None if duration is None else round(duration, 1)})
    return rows


def _write_best(study: optuna.Study, cfg: Config, name: str, path: Path) -> bool:
    """Write the best trial's run config, with the project's own evaluation settings, as a project file."""
    best = _best_trial(study)
    if best is None:
        return False
    run_config = Path(best.user_attrs["run_dir"]) / "config.yaml"
    if not run_config.is_file():
        console.print(f"[yellow]warning:[/] the best trial's run config {run_config} is gone; {path} not written")
        return False
    stored, _ = load_config(run_config, stored=True)
    # The trials skipped these for speed; training the chosen settings should evaluate as the project asks.
    stored.eval.baseline = cfg.eval.baseline
    stored.eval.forgetting.enabled = cfg.eval.forgetting.enabled
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in best.params.items())
    header = (f"# Best trial {best.number} of sweep {name} (run {best.user_attrs['run_id']}): "
              f"validation loss {best.value:.6g} with {params}.\n# Train it: tunesmith run -c {path}\n")
    path.write_text(header + config_to_yaml(stored), encoding="utf-8")
    return True


def _write_outputs(study: optuna.Study, cfg: Config, name: str, folder: Path) -> None:
    rows = trial_rows(study)
    (folder / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    _write_best(study, cfg, name, folder / "best.yaml")


def _open_study(cfg: Config, name: str, storage: str) -> optuna.Study:
    existing = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    # A resumed sampler seeded like the first one would start its random draws over and repeat earlier trials'
    # values; offsetting the seed by the trials already run keeps a resumed sweep reproducible without repeats.
    sampler = optuna.samplers.TPESampler(seed=cfg.project.seed + existing.get(name, 0),
                                         n_startup_trials=cfg.sweep.startup_trials)
    pc = cfg.sweep.pruner
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=pc.n_startup_trials, n_warmup_steps=pc.n_warmup_steps)
              if pc.enabled else optuna.pruners.NopPruner())
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True, sampler=sampler, pruner=pruner,
                                direction="minimize")
    space = {k: v.model_dump(mode="json", exclude_none=True) for k, v in cfg.sweep.space.items()}
    if study.user_attrs.get("space") not in (None, space):
        console.print("[yellow]warning:[/] sweep.space changed since this study began; earlier trials keep their "
                      "values and still count (give sweep.name a new value for a fresh study)")
    study.set_user_attr("space", space)
    return study


def run_sweep(cfg: Config, base_dir: Path, trials: int | None = None) -> dict[str, Any]:
    """Run (or continue) the project's hyperparameter search until the study holds ``trials`` finished trials.

    Args:
        cfg: The validated project config with a ``sweep`` section.
        base_dir: The folder relative paths in the config are resolved against.
        trials: Finished (complete or pruned) trials the study should hold; None uses ``sweep.trials``.
            Failed trials do not count: their slots are run again.

    Returns:
        A summary: study name and folder, the best trial (value, params, run id, ``best.yaml``) and one row per trial.

    Raises:
        ConfigError: An unusable search space, or no validation split.
        UserError: Another process is running this sweep; or a trial's run failed on bad data or model (the
            trial is marked failed and the sweep stops; running it again continues).
    """
    check_sweep(cfg)
    total = trials if trials is not None else cfg.sweep.trials
    if total < 1:
        raise UserError(f"--trials must be at least 1 (got {total})")
    name, folder = study_name(cfg), sweep_folder(cfg, base_dir)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / "sweep.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UserError(f"sweep '{name}' is already running in another process (lock {folder / 'sweep.lock'}); "
                        "wait for it, or give sweep.name another value") from None
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # tunesmith prints one line per trial instead
    try:
        study = _open_study(cfg, name, f"sqlite:///{folder / 'study.db'}")
        _fail_orphans(study)
        finished = len(study.get_trials(deepcopy=False, states=_FINISHED))
        console.print(f"Sweep [bold]{name}[/] in {folder}: {finished} of {total} trials finished; minimising the best "
                      "validation loss of each trial's run")
        console.print("Trials skip the untuned baseline evaluation and the forgetting check (" +
                      ", ".join(f"{k}={str(v).lower()}" for k, v in TRIAL_OVERRIDES.items()) +
                      "); best.yaml keeps the project's own settings")
        _write_outputs(study, cfg, name, folder)
        ran = 0
        while finished < total:
            trial = study.ask()
            try:
                # One trial number everywhere (optuna's, as trials.jsonl, status.json and best.yaml give it); the
                # bracket is progress, not a number.
                _run_trial(study, trial, cfg, base_dir, name, f"[{finished + 1}/{total}] trial {trial.number}")
            finally:
                _write_outputs(study, cfg, name, folder)
            finished, ran = finished + 1, ran + 1
        return _summary(study, name, folder, total, ran)
    finally:
        optuna.logging.set_verbosity(verbosity)
        lock.release()


def _summary(study: optuna.Study, name: str, folder: Path, total: int, ran: int) -> dict[str, Any]:
    best = _best_trial(study)
    rows = trial_rows(study)
    return {
        "study": name, "folder": str(folder), "storage": str(folder / "study.db"),
        "objective": "best validation loss of each trial's run (minimised)",
        "trials_requested": total, "trials_finished": sum(r["state"] in ("complete", "pruned") for r in rows),
        "trials_run_now": ran, "trial_overrides": TRIAL_OVERRIDES,
        "best_trial": None if best is None else best.number,
        "best_value": None if best is None else _finite(best.value),
        "best_params": None if best is None else best.params,
        "best_run_id": None if best is None else best.user_attrs.get("run_id"),
        "best_config": str(folder / "best.yaml") if (folder / "best.yaml").is_file() and best is not None else None,
        "trials_file": str(folder / "trials.jsonl"),
        "trials": rows,
    }
