"""The SQLite run registry: what the pipeline records, backfill from folders, and `tunesmith runs` filters."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.run_helpers import make_tiny_project, run_tiny
from tunesmith.cli import app
from tunesmith.errors import UserError
from tunesmith.runs.store import DB_NAME, get_run, note_run, query_runs, record_run, update_run
from tunesmith.runs.folder import RunPaths

runner = CliRunner()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_model_dir):
    """Run A (lr 0.01) and run B (lr 0.02, tagged as a sweep trial from the pipeline's on_start hook)."""
    project = make_tiny_project(tmp_path_factory.mktemp("registry"), tiny_model_dir)
    runs_dir = project.parent / "runs"
    seen_at_start = {}

    def tag_trial(run: RunPaths) -> None:
        seen_at_start[run.id] = get_run(runs_dir, run.id)["status"]
        record_run(runs_dir, run, sweep="lr-search")

    a = run_tiny(project)
    b = run_tiny(project, "train.lr=0.02", on_start=tag_trial)
    return a, b, runs_dir, seen_at_start


def _ids(args, runs_dir):
    res = runner.invoke(app, ["runs", "--runs-dir", str(runs_dir), "--json", *args])
    assert res.exit_code == 0, res.output
    return [r["id"] for r in json.loads(res.stdout)]


def test_pipeline_records_the_run_as_running_then_completed(two_runs):
    a, b, runs_dir, seen_at_start = two_runs
    assert seen_at_start == {b.id: "running"}
    assert (runs_dir / DB_NAME).is_file()
    assert [get_run(runs_dir, r.id)["status"] for r in (a, b)] == ["completed", "completed"]
    assert json.loads(b.status.read_text())["status"] == "completed"  # status.json is still written


def test_row_holds_config_data_hash_and_metrics(two_runs):
    a, b, runs_dir, _ = two_runs
    row = get_run(runs_dir, b.id)
    report = json.loads(b.report_json.read_text())
    assert row["path"] == str(b.root.resolve()) and row["task"] == "classification" and row["method"] == "lora"
    assert row["project"] == "tunesmith-project" and row["base_model"] == report["model"]["base"]
    manifest = json.loads((b.data / "manifest.json").read_text())
    assert row["data_hash"] == report["data"]["data_hash"] == manifest["data_hash"]
    assert row["metric"] == "accuracy" and row["target"] == 0.0 and row["verdict"] == report["verdict"]
    assert row["tuned"] == report["tuned"]["metrics"]["accuracy"]
    assert row["baseline"] == report["baseline"]["metrics"]["accuracy"]
    assert row["config"]["train"]["lr"] == 0.02 and row["config"]["adapter"]["r"] == 4
    assert row["metrics"]["tuned"] == report["tuned"]["metrics"]
    assert row["metrics"]["train"]["final_train_loss"] == report["train"]["final_train_loss"]
    assert row["sweep"] == "lr-search" and get_run(runs_dir, a.id)["sweep"] is None


@pytest.mark.parametrize("args, expected", [
    ([], "BA"),
    (["--status", "completed"], "BA"),
    (["--status", "failed"], ""),
    (["--task", "classification", "--method", "lora"], "BA"),
    (["--task", "qa"], ""),
    (["--where", "train.lr=0.02"], "B"),
    (["--where", "train.lr=2e-2", "--where", "adapter.r=4"], "B"),
    (["--where", "train.lr<0.015"], "A"),
    (["--where", "adapter.r!=4"], ""),
    (["--where", "train.report_to=[]"], "BA"),
    (["--sweep", "lr-search"], "B"),
    (["--since", "2000-01-01"], "BA"),
    (["--since", "2999-01-01T00:00"], ""),
    (["--limit", "1"], "B"),
])
def test_runs_filters(two_runs, args, expected):
    a, b, runs_dir, _ = two_runs
    assert _ids(args, runs_dir) == [{"A": a.id, "B": b.id}[c] for c in expected]


def test_runs_sort_by_a_figure_puts_the_best_first(two_runs):
    a, b, runs_dir, _ = two_runs
    res = runner.invoke(app, ["runs", "--runs-dir", str(runs_dir), "--json", "--sort", "best_val_loss"])
    losses = [r["metrics"]["train"]["best_val_loss"] for r in json.loads(res.stdout)]
    assert losses == sorted(losses) and len(losses) == 2
    res = runner.invoke(app, ["runs", "--runs-dir", str(runs_dir), "--json", "--sort", "tokens_per_second"])
    speeds = [r["metrics"]["train"]["tokens_per_second"] for r in json.loads(res.stdout)]
    assert speeds == sorted(speeds, reverse=True)
    table = runner.invoke(app, ["runs", "--runs-dir", str(runs_dir), "--sort", "loss"])
    assert table.exit_code == 0 and "sweep" in table.stdout and "lr-search" in table.stdout
    assert a.id in table.stdout and b.id in table.stdout


@pytest.mark.parametrize("args, message", [
    (["--where", "adapter.rr=4"], "did you mean adapter.r"),
    (["--where", "adapter.r"], "expected KEY=VALUE"),
    (["--since", "last tuesday"], "expected a date"),
    (["--status", "complete"], "did you mean completed"),
    (["--task", "poetry"], "one of classification"),
    (["--sort", "bleurt"], "no listed run has it"),
    (["--limit", "0"], "positive"),
])
def test_bad_filters_exit_2_with_a_clear_message(two_runs, args, message):
    runs_dir = two_runs[2]
    res = runner.invoke(app, ["runs", "--runs-dir", str(runs_dir), *args])
    assert res.exit_code == 2 and message in " ".join(res.output.split()), res.output


def test_runs_made_before_the_registry_are_backfilled_and_deleted_ones_kept(two_runs, tmp_path):
    a, b, runs_dir, _ = two_runs
    old = tmp_path / "runs"
    shutil.copytree(runs_dir, old, ignore=shutil.ignore_patterns(DB_NAME, "mlflow.db"))
    assert not (old / DB_NAME).exists()
    assert _ids([], old) == [b.id, a.id]
    row = get_run(old, a.id)
    assert row["status"] == "completed" and row["tuned"] == get_run(runs_dir, a.id)["tuned"]
    shutil.rmtree(old / a.id)
    assert _ids(["--status", "missing"], old) == [a.id]
    assert get_run(old, a.id)["config"]["train"]["lr"] == 0.01  # still known after its folder is gone


def test_failed_run_is_recorded_with_its_error(tmp_path, tiny_model_dir):
    project = make_tiny_project(tmp_path, tiny_model_dir)

    def stop(run: RunPaths) -> None:
        raise RuntimeError(f"stopped {run.id}")

    with pytest.raises(RuntimeError):
        run_tiny(project, on_start=stop)
    (row,) = query_runs(tmp_path / "runs", status="failed")
    assert row["error"] == f"RuntimeError: stopped {row['id']}" and row["tuned"] is None


def test_update_run_merges_metrics_and_a_later_sync_keeps_them(two_runs, tmp_path):
    a, _, runs_dir, _ = two_runs
    copy = tmp_path / "runs"
    shutil.copytree(runs_dir, copy)
    update_run(copy, a.id, sweep="s2", metrics={"objective": 0.5})
    row = get_run(copy, a.id)
    assert row["sweep"] == "s2" and row["metrics"]["objective"] == 0.5 and "tuned" in row["metrics"]
    record_run(copy, RunPaths(copy / a.id))
    row = get_run(copy, a.id)
    assert row["sweep"] == "s2" and row["metrics"]["objective"] == 0.5
    with pytest.raises(UserError, match="no run 'nope'"):
        update_run(copy, "nope", sweep="x")
    with pytest.raises(ValueError, match="unknown registry column"):
        update_run(copy, a.id, colour="blue")


def test_parallel_writers_share_the_database(two_runs, tmp_path):
    a = two_runs[0]
    folders = []
    for i in range(24):
        root = tmp_path / "runs" / f"20250101-0000{i:02d}-classification"
        root.mkdir(parents=True)
        for name in ("config.yaml", "status.json", "report.json"):
            shutil.copy(a.root / name, root / name)
        folders.append(RunPaths(root))
    errors = []

    def writer(part):
        try:
            for run in part:
                record_run(tmp_path / "runs", run)
                update_run(tmp_path / "runs", run.id, sweep="parallel")
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(folders[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(query_runs(tmp_path / "runs", sweep="parallel")) == 24


def test_listing_an_absent_runs_folder_creates_nothing(tmp_path):
    res = runner.invoke(app, ["runs", "--runs-dir", str(tmp_path / "none")])
    assert res.exit_code == 0 and "No runs yet" in res.output
    assert not (tmp_path / "none").exists()


def test_a_broken_registry_is_named_and_does_not_stop_a_run(two_runs, tmp_path, capsys):
    a = two_runs[0]
    runs_dir = tmp_path / "runs"
    shutil.copytree(a.root, runs_dir / a.id)
    (runs_dir / DB_NAME).write_bytes(b"this is not a database" * 100)
    res = runner.invoke(app, ["runs", "--runs-dir", str(runs_dir)])
    assert res.exit_code == 2 and f"run registry {runs_dir / DB_NAME}" in " ".join(res.output.split())
    note_run(runs_dir, RunPaths(runs_dir / a.id))  # what the pipeline calls: a warning, no exception
    err = " ".join(capsys.readouterr().err.split())
    assert "warning: run registry" in err and f"will record run {a.id} later" in err


def test_runs_are_found_by_id_from_anywhere_once_recorded(tmp_path, monkeypatch):
    from tunesmith.runs.folder import new_run
    from tunesmith.runs.store import find_known_run, known_runs_dirs, note_run, query_known_runs

    monkeypatch.setenv("TUNESMITH_KNOWN_RUNS_DIRS", str(tmp_path / "known.json"))  # this test's list alone
    runs_dir = tmp_path / "project" / "runs"
    run = new_run(runs_dir, "classification")
    (run.root / "config.yaml").write_text("objective: {task: classification}\n")
    note_run(runs_dir, run)
    assert known_runs_dirs() == [runs_dir.resolve()]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert find_known_run(run.id, Path("runs")).root == runs_dir.resolve() / run.id
    assert [r["id"] for r in query_known_runs()] == [run.id]
    with pytest.raises(UserError, match="nor in the runs folders tunesmith knows"):
        find_known_run("20990101-000000-qa", Path("runs"))
    res = CliRunner().invoke(app, ["runs", "--json"])  # from a folder with no project and no runs
    assert res.exit_code == 0 and [r["id"] for r in json.loads(res.stdout)] == [run.id]
