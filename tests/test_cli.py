"""The command line: init for every task, exit codes, JSON output, run/eval/chat/runs on the tiny model."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.config import TASKS, load_config
from tunesmith.data.prepare import prepare_splits

runner = CliRunner()


@pytest.mark.parametrize("task", TASKS)
def test_init_writes_a_valid_commented_project(tmp_path, task):
    res = runner.invoke(app, ["init", str(tmp_path / "p"), "--task", task, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    text = (tmp_path / "p" / "tunesmith.yaml").read_text()
    assert text.count("#") > 20  # commented
    cfg, base = load_config(tmp_path / "p" / "tunesmith.yaml")
    assert cfg.objective.task == task and out["task"] == task
    splits = prepare_splits(cfg, base)
    assert len(splits.train) > len(splits.test) > 0
    assert (tmp_path / "p" / "data" / "NOTICE.md").is_file()
    if task == "classification":
        assert "CC BY 4.0" in text and "PolyAI" in text


def test_init_refuses_to_overwrite(tmp_path):
    assert runner.invoke(app, ["init", str(tmp_path)]).exit_code == 0
    res = runner.invoke(app, ["init", str(tmp_path)])
    assert res.exit_code == 2 and "already exists" in res.output
    assert runner.invoke(app, ["init", str(tmp_path), "--task", "poetry"]).exit_code == 2


def test_bad_config_exits_2_naming_the_key(tmp_path):
    (tmp_path / "tunesmith.yaml").write_text("train:\n  learning_rate: 0.1\n")
    res = runner.invoke(app, ["run", "-c", str(tmp_path / "tunesmith.yaml")])
    assert res.exit_code == 2
    assert "train.learning_rate: unknown key" in res.output
    res = runner.invoke(app, ["run", "-c", str(tmp_path / "tunesmith.yaml"), "--set", "train.lr=-1"])
    assert res.exit_code == 2


def test_malformed_rows_are_set_aside_and_strict_exits_2(tiny_project):
    with (tiny_project / "data" / "train.jsonl").open("a") as fh:
        fh.write('{"text": "broken", \n')
    res = runner.invoke(app, ["run", "-c", str(tiny_project / "tunesmith.yaml"), "--strict"])
    assert res.exit_code == 2
    assert "train.jsonl:55: malformed JSON" in res.output.replace("\n", "")
    res = runner.invoke(app, ["run", "-c", str(tiny_project / "tunesmith.yaml"), "--json"])
    assert res.exit_code == 0, res.output
    acc = json.loads(res.stdout)["data"]["accounting"]
    assert acc["rows_read"] == 55 and acc["rejected"] == 1 and acc["kept"] == 54
    (rejected,) = (tiny_project / "runs").glob("*/data/rejected.jsonl")
    row = json.loads(rejected.read_text())
    assert row["line"] == 55 and row["kind"] == "malformed JSON" and row["raw"] == '{"text": "broken", '
    assert "set aside **1**" in (rejected.parent.parent / "report.md").read_text()


def test_run_eval_chat_runs_with_json(tiny_project, monkeypatch):
    monkeypatch.chdir(tiny_project)
    res = runner.invoke(app, ["run", "--json", "--set", "train.max_steps=2"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["verdict"] in ("met", "not met") and summary["objective"]["metric"] == "accuracy"
    run_id = summary["run_id"]

    res = runner.invoke(app, ["eval", "--run", run_id, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["metrics"]["accuracy"] == pytest.approx(summary["tuned"]["accuracy"])
    res = runner.invoke(app, ["eval", "--run", run_id, "--base", "--json"])
    assert json.loads(res.stdout)["metrics"]["accuracy"] == pytest.approx(summary["baseline"]["accuracy"])
    res = runner.invoke(app, ["eval", "--base", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["model"] == "base"

    res = runner.invoke(app, ["chat", "--run", run_id, "Where is my card?", "--json"])
    assert res.exit_code == 0, res.output
    chat_out = json.loads(res.stdout)
    assert chat_out["run_id"] == run_id and "label" in chat_out

    res = runner.invoke(app, ["runs", "--json"])
    rows = json.loads(res.stdout)
    assert rows[0]["id"] == run_id and rows[0]["tuned"] == pytest.approx(summary["tuned"]["accuracy"])
    assert runner.invoke(app, ["runs"]).exit_code == 0
    assert runner.invoke(app, ["eval", "--run", "no-such-run"]).exit_code == 2


def test_help_comes_from_docstrings():
    res = subprocess.run([sys.executable, "-m", "tunesmith", "run", "--help"], capture_output=True, text=True)
    assert res.returncode == 0
    assert "Run the whole pipeline" in res.stdout and "--set" in res.stdout and "--json" in res.stdout
