"""A multi-task run end to end on the tiny model: per-task metrics in every report and in the command outputs."""

import json
from pathlib import Path
from statistics import mean

import pytest
import yaml
from typer.testing import CliRunner

from tests.data.test_mix import MIX, project
from tunesmith.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def mix_run(tmp_path_factory, tiny_model_dir):
    """A data.mix project (intent classification 3 : faq question answering 1) run once through ``tunesmith run --json``."""
    tmp_path = tmp_path_factory.mktemp("mix-project")
    project(tmp_path, MIX + (
        "objective: {task: classification}\n"
        f"model: {{base: '{tiny_model_dir}', max_seq_len: 96}}\n"
        "adapter: {r: 4, alpha: 8}\n"
        "train: {epochs: 1, max_steps: 3, batch_size: 8, lr: 0.01, eval_every: 2, logging_steps: 1}\n"
        "eval: {max_new_tokens: 6, batch_size: 8, bootstrap_resamples: 200, forgetting: {enabled: false}}\n"))
    res = runner.invoke(app, ["run", "-c", str(tmp_path / "tunesmith.yaml"), "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout), tmp_path


def read_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_mix_run_reports_metrics_per_task(mix_run):
    summary, _ = mix_run
    root = Path(summary["run_dir"])
    report = json.loads((root / "report.json").read_text())
    tuned, baseline = read_rows(root / "predictions" / "tuned.jsonl"), read_rows(root / "predictions" / "baseline.jsonl")
    per_task = {t["task"]: t for t in report["per_task"]}
    assert summary["per_task"] == report["per_task"] and list(per_task) == ["intent", "faq"]
    for tag, kind, metric in (("intent", "classification", "accuracy"), ("faq", "qa", "token_f1")):
        entry = per_task[tag]
        mine = [r for r in tuned if r["meta"]["task"] == tag]
        assert entry["type"] == kind and entry["metric"] == metric and entry["count"] == len(mine) > 0
        assert {r["task_type"] for r in mine} == {kind}
        # the leading metric is the mean of the per-example scores the predictions file shows
        m = entry["metrics"][metric]
        assert m["tuned"]["value"] == pytest.approx(mean(r["score"] for r in mine))
        assert m["baseline"]["value"] == pytest.approx(mean(r["score"] for r in baseline if r["meta"]["task"] == tag))
        if m["tuned"]["method"] == "none":  # a handful of test rows: no interval for token F1
            assert len(mine) < report["min_test_examples"] and kind == "qa"
        else:
            assert m["tuned"]["low"] <= m["tuned"]["value"] <= m["tuned"]["high"]
        assert report["data"]["tasks"][tag]["test"] == len(mine)
    # classification answers are matched to the intent task's labels only
    assert {r["prediction"] for r in tuned if r["meta"]["task"] == "intent"} <= {"", *report["data"]["tasks"]["intent"]["labels"]}
    train = report["data"]["tasks"]
    assert abs(train["intent"]["share"] - 0.75) <= 1 / report["data"]["train"]
    assert {r["value"] for r in report["slices"]["rows"] if r["field"] == "task"} == {"intent", "faq"}
    md = (root / "report.md").read_text()
    section = md[md.index("## Per task"):]
    assert "| intent | classification | 3 | " in section and "| faq | qa | 1 | " in section
    assert f"{per_task['faq']['metrics']['token_f1']['tuned']['value']:.4f}" in section
    assert "Training shares after mixing: intent" in section
    page = (root / "report.html").read_text()
    assert page.index("<h2>Per task</h2>") < page.index("<h2>Data</h2>") and "token_f1 (leading)" in page
    stored = yaml.safe_load((root / "config.yaml").read_text())["data"]
    assert "train" not in stored and [s["task"] for s in stored["mix"]] == ["intent", "faq"]


def test_eval_of_a_mix_run_breaks_the_metrics_down_by_task(mix_run):
    summary, project_dir = mix_run
    res = runner.invoke(app, ["eval", "--run", summary["run_id"], "--runs-dir", str(project_dir / "runs"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out["by_task"]) == {"intent", "faq"}
    for entry in summary["per_task"]:
        for name, m in entry["metrics"].items():
            assert out["by_task"][entry["task"]][name] == pytest.approx(m["tuned"]["value"])
