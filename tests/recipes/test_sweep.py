"""Hyperparameter search on the tiny model: real optuna studies in SQLite, every trial a real run folder."""

import json
import math
from pathlib import Path

import optuna
import pytest
from filelock import FileLock
from optuna.trial import TrialState
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.config import load_config
from tunesmith.errors import ConfigError, UserError
from tunesmith.runs.store import query_runs
from tunesmith.runs.folder import new_run, write_status
from tunesmith.recipes.sweep import check_sweep, run_sweep, study_name, sweep_folder

runner = CliRunner()

SPACE = "sweep: {space: {train.lr: {low: 1.0e-3, high: 0.1, log: true}, adapter.r: {choices: [2, 4, 8]}}}\n"


def _project(tiny_project: Path, sweep: str = SPACE) -> Path:
    path = tiny_project / "tunesmith.yaml"
    path.write_text(path.read_text() + sweep)
    return path


def _study(cfg, base) -> optuna.Study:
    folder = sweep_folder(cfg, base)
    return optuna.load_study(study_name=study_name(cfg), storage=f"sqlite:///{folder / 'study.db'}")


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_sweep_records_every_trial_as_a_run_and_resumes(tiny_project):
    project = _project(tiny_project)
    fast = ["sweep.pruner.enabled=false", "train.max_steps=2"]
    res = runner.invoke(app, ["sweep", "-c", str(project), "--trials", "1", "--json", *(f"--set={f}" for f in fast)])
    assert res.exit_code == 0, res.output
    first = json.loads(res.stdout)
    assert first["trials_finished"] == first["trials_run_now"] == 1
    assert first["trial_overrides"] == {"eval.baseline": False, "eval.forgetting.enabled": False}

    # What a sweep killed with SIGKILL leaves behind: a trial still RUNNING and its run folder saying "running".
    cfg, base = load_config(project, fast)
    study = _study(cfg, base)
    orphan = study.ask()
    orphan_run = new_run(base / "runs", "classification")
    write_status(orphan_run, "running", sweep=study_name(cfg), trial=orphan.number)
    orphan.set_user_attr("run_dir", str(orphan_run.root))

    second = run_sweep(cfg, base, trials=2)
    assert second["trials_run_now"] == 1 and second["trials_finished"] == 2
    study = _study(cfg, base)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert _read(orphan_run.status)["status"] == "failed"
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    # Resuming re-seeds the sampler past the earlier trials, so no trial repeats an earlier one's draw.
    assert len({t.params["train.lr"] for t in done}) == 2

    run_dirs = {p for p in (base / "runs").iterdir() if (p / "config.yaml").is_file()}
    assert run_dirs == {base / "runs" / t.user_attrs["run_id"] for t in done}  # one run per finished trial, no more
    for t in done:
        root = base / "runs" / t.user_attrs["run_id"]
        run_cfg, _ = load_config(root / "config.yaml")
        assert run_cfg.train.lr == pytest.approx(t.params["train.lr"]) and run_cfg.adapter.r == t.params["adapter.r"]
        assert run_cfg.eval.baseline is False and run_cfg.eval.forgetting.enabled is False
        status = _read(root / "status.json")
        assert (status["status"], status["sweep"], status["trial"]) == ("completed", study_name(cfg), t.number)
        val_losses = [r["val_loss"] for r in map(json.loads, (root / "metrics.jsonl").read_text().splitlines())
                      if "val_loss" in r]
        assert t.value == pytest.approx(min(val_losses))
        assert t.value == pytest.approx(_read(root / "report.json")["train"]["best_val_loss"])

    best = min(done, key=lambda t: t.value)
    assert (second["best_trial"], second["best_run_id"]) == (best.number, best.user_attrs["run_id"])
    assert second["best_value"] == pytest.approx(best.value) and second["best_params"] == best.params
    best_cfg, _ = load_config(Path(second["best_config"]))
    assert best_cfg.train.lr == pytest.approx(best.params["train.lr"])
    assert best_cfg.adapter.r == best.params["adapter.r"]
    # The trials' shortcuts are undone, and the data path stays valid wherever best.yaml is read from.
    assert best_cfg.eval.baseline is True and best_cfg.eval.forgetting.enabled is True
    assert best_cfg.data.train == (tiny_project / "data" / "train.jsonl").resolve()
    rows = [json.loads(line) for line in Path(second["trials_file"]).read_text().splitlines()]
    assert [(r["trial"], r["state"]) for r in rows] == [(0, "complete"), (1, "failed"), (2, "complete")]
    assert [r["run_id"] for r in rows if r["state"] == "complete"] == [t.user_attrs["run_id"] for t in done]

    # Asked again for the same total, the study is already there: nothing runs.
    again = run_sweep(cfg, base, trials=2)
    assert again["trials_run_now"] == 0 and len(again["trials"]) == 3
    assert {p for p in (base / "runs").iterdir() if (p / "config.yaml").is_file()} == run_dirs
    registry = {r["id"]: r["status"] for r in query_runs(base / "runs", sweep=study_name(cfg))}
    assert registry == {**{t.user_attrs["run_id"]: "completed" for t in done}, orphan_run.id: "failed"}


def test_a_trial_worse_than_the_median_is_pruned_at_its_first_validation(tiny_project):
    project = _project(tiny_project, "sweep:\n"
                                     "  pruner: {n_startup_trials: 1, n_warmup_steps: 0}\n"
                                     "  space: {train.lr: {low: 1.0e-3, high: 0.1, log: true},"
                                     " adapter.r: {choices: [4]}}\n")
    cfg, base = load_config(project)
    folder = sweep_folder(cfg, base)
    folder.mkdir(parents=True)
    study = optuna.create_study(study_name=study_name(cfg), storage=f"sqlite:///{folder / 'study.db'}")
    # Fix the two trials' values: a learning rate that learns in two steps, then one that barely moves.
    study.enqueue_trial({"train.lr": 0.05, "adapter.r": 4})
    study.enqueue_trial({"train.lr": 1e-3, "adapter.r": 4})

    result = run_sweep(cfg, base, trials=2)
    study = _study(cfg, base)
    good, slow = study.trials
    assert (good.state, slow.state) == (TrialState.COMPLETE, TrialState.PRUNED)
    assert slow.intermediate_values[2] > good.intermediate_values[2]  # eval_every: 2 in the fixture
    slow_run = base / "runs" / slow.user_attrs["run_id"]
    status = _read(slow_run / "status.json")
    assert status["status"] == "pruned" and status["trial"] == 1 and "pruned at step 2" in status["reason"]
    steps = [json.loads(line)["step"] for line in (slow_run / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 2 and not (slow_run / "report.json").exists()  # max_steps is 3: training stopped early
    assert [(r["state"], r["pruned_at_step"]) for r in result["trials"]] == [("complete", None), ("pruned", 2)]
    assert result["best_trial"] == 0 and result["trials_finished"] == 2
    registry = {r["id"]: r["status"] for r in query_runs(base / "runs", sweep=study_name(cfg))}
    assert registry == {good.user_attrs["run_id"]: "completed", slow.user_attrs["run_id"]: "pruned"}


def test_a_diverged_trial_is_the_worst_value_and_nobodys_best(tiny_project):
    # Without gradient clipping, a learning rate of 1e20 turns the weights into NaN before the first validation
    # (at 1e6 whether they overflow depends on the attention kernel's arithmetic).
    project = _project(tiny_project, "sweep: {space: {train.lr: {choices: [1.0e+20]}}}\n")
    cfg, base = load_config(project, ["train.max_grad_norm=null", "train.max_steps=2"])
    result = run_sweep(cfg, base, trials=1)
    (trial,) = _study(cfg, base).trials
    assert trial.state == TrialState.COMPLETE and trial.value == math.inf  # the sampler learns to avoid it
    assert result["trials"][0]["value"] is None and result["best_trial"] is None and result["best_config"] is None
    assert not (sweep_folder(cfg, base) / "best.yaml").exists()


def test_search_space_errors_name_the_key(tiny_project):
    res = runner.invoke(app, ["sweep", "-c", str(_project(tiny_project)), "--set",
                              "sweep.space={train.lrr: {low: 0.001, high: 0.1}}"])
    assert res.exit_code == 2
    assert "sweep.space.train.lrr: not a searchable key; did you mean 'train.lr'?" in res.output.replace("\n", "")
    bad = {
        "sweep.space={adapter.dropout: {low: 0.1, high: 1.5}}": "sweep.space.adapter.dropout.high: 1.5 is not a valid",
        "sweep.space={adapter.r: {low: 2, high: 16, step: 1.5}}": "sweep.space.adapter.r.step",
        "sweep.space={train.batch_size: {choices: [4, 0]}}": "sweep.space.train.batch_size.choices[1]",
        "sweep.space={}": "sweep.space is empty",
    }
    for override, message in bad.items():
        cfg, _ = load_config(tiny_project / "tunesmith.yaml", [override])
        with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
            check_sweep(cfg)
    cfg, _ = load_config(tiny_project / "tunesmith.yaml", ["data.split={train: 0.9, validation: 0, test: 0.1}"])
    with pytest.raises(ConfigError, match="data.split.validation is 0"):
        check_sweep(cfg)
    with pytest.raises(ConfigError, match=r"sweep.space.train.lr: a log-scale range needs low > 0"):
        load_config(None, ["sweep.space={train.lr: {low: 0, high: 0.1, log: true}}"])


def test_a_sweep_already_running_elsewhere_is_refused(tiny_project):
    cfg, base = load_config(_project(tiny_project))
    folder = sweep_folder(cfg, base)
    folder.mkdir(parents=True)
    with FileLock(folder / "sweep.lock"):
        with pytest.raises(UserError, match="already running in another process"):
            run_sweep(cfg, base, trials=1)
    assert not any((base / "runs").glob("*/config.yaml"))
