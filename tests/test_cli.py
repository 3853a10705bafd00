"""The command line: init for every task, exit codes, JSON output, run/eval/chat/runs on the tiny model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.config import load_config
from tunesmith.tasks import TASKS
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
    # classification: the label as evaluation decides it (within the label set) and its probability
    labels = json.loads((Path(summary["run_dir"]) / "report.json").read_text())["data"]["labels"]
    assert chat_out["run_id"] == run_id and chat_out["label"] in labels and 0 < chat_out["probability"] <= 1

    res = runner.invoke(app, ["runs", "--json"])
    rows = json.loads(res.stdout)
    assert rows[0]["id"] == run_id and rows[0]["tuned"] == pytest.approx(summary["tuned"]["accuracy"])
    assert runner.invoke(app, ["runs"]).exit_code == 0
    assert runner.invoke(app, ["eval", "--run", "no-such-run"]).exit_code == 2


def test_help_comes_from_docstrings():
    res = subprocess.run([sys.executable, "-m", "tunesmith", "run", "--help"], capture_output=True, text=True)
    assert res.returncode == 0
    assert "Run the whole pipeline" in res.stdout and "--set" in res.stdout and "--json" in res.stdout


def test_data_check_reports_where_every_row_went(tmp_path, tiny_model_dir):
    rows = [{"text": f"How do I reset the PIN for card number {i}?", "label": "pin"} for i in range(3)]
    card = "Where is my new card? I ordered it two weeks ago, the app says it was shipped, and it has still not arrived"
    rows += [{"text": card, "label": "card"}] * 2  # exact duplicate
    rows += [{"text": card + " yet", "label": "card"}]  # near duplicate
    rows += [{"text": "Email me at jo@example.com about the exchange rate", "label": "rate"}]
    rows += [{"text": t, "label": "rate"} for t in ["What exchange rate do you use?", "Is the euro rate good today?",
                                                     "How are currencies converted?", "Why did the dollar cost more?",
                                                     "Which rate applies abroad?", "Tell me the yen price."]]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"text": broken\n')
    res = runner.invoke(app, ["data", "check", str(path), "--out", str(tmp_path / "rep"), "--json",
                              "--set", f"model.base={tiny_model_dir}", "--set", "model.max_seq_len=80"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert s["rows_read"] == 14 and s["adds_up"]
    assert s["format"] == "text_label" and s["columns"] == {"text": "text", "label": "label"}
    # measured with the model's tokenizer; the long card question is over 80 tokens and truncated (the default)
    assert s["tokens"]["train"]["count"] == s["splits"]["train"] and s["tokens"]["train"]["policy"] == "truncate"
    assert sum(t["over_max_seq_len"] for t in s["tokens"].values()) >= 1
    assert "<|im_start|>" in s["preview"]["text"] and s["preview"]["loss_on"].startswith(s["preview"]["loss_on"].strip())
    assert s["balance"]["imbalance_ratio"] > 1 and len(s["data_hash"]) == 64
    assert s["rejected"] == {"malformed JSON": 1}
    assert s["duplicates_exact"] == 1 and s["duplicates_near"] >= 1
    assert s["pii"] == {"EMAIL": 1}
    assert {"rows_kept", "removed", "conflicts", "leakage"} <= set(s)
    # The same check as a person reads it: where every row went, and where the report is.
    res = runner.invoke(app, ["data", "check", str(path), "--out", str(tmp_path / "rep"),
                              "--set", f"model.base={tiny_model_dir}", "--set", "model.max_seq_len=80"])
    assert res.exit_code == 0, res.output
    assert "14 rows read" in res.output and "set aside 1: malformed JSON" in res.output
    assert "Report: " in res.output and "data_report.html" in res.output
    page = (tmp_path / "rep" / "data_report.html").read_text()
    assert "data:image/png;base64," in page and "Rows read" in page
    assert (tmp_path / "rep" / "rejected.jsonl").read_text().count("\n") == 1
    res = runner.invoke(app, ["data", "check", str(path), "--out", str(tmp_path / "rep2"), "--strict", "--no-tokens"])
    assert res.exit_code == 2 and "d.jsonl:14: malformed JSON" in res.output.replace("\n", "")


def test_score_any_systems_predictions(tmp_path):
    refs = [{"id": i, "reference": lab} for i, lab in enumerate(["card_arrival", "pin_blocked"] * 20)]
    tuned = [{"id": i, "prediction": f"Label: {r['reference']}" if i % 10 else "no idea"} for i, r in enumerate(refs)]
    base = [{"id": i, "prediction": "card_arrival"} for i in range(40)]
    for name, rows in (("refs", refs), ("tuned", tuned), ("base", base)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["score", "--task", "classification", "-p", str(tmp_path / "tuned.jsonl"), "-r", str(tmp_path / "refs.jsonl")]
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    acc = out["metrics"]["accuracy"]
    assert out["count"] == 40 and acc["value"] == pytest.approx(0.9) and acc["low"] < 0.9 < acc["high"] + 1e-9
    res = runner.invoke(app, [*args, "--baseline", str(tmp_path / "base.jsonl"), "--json"])
    cmp = json.loads(res.stdout)["comparison"]["accuracy"]
    assert cmp["diff"]["value"] == pytest.approx(0.4) and cmp["significant"]
    assert "significant" in runner.invoke(app, [*args, "--baseline", str(tmp_path / "base.jsonl")]).output
    (tmp_path / "bad.jsonl").write_text('{"id": 0, "prediction": "x"}\n{"id": 0, "prediction": "y"}\n')
    res = runner.invoke(app, ["score", "--task", "classification", "-p", str(tmp_path / "bad.jsonl"), "-r", str(tmp_path / "refs.jsonl")])
    assert res.exit_code == 2 and "bad.jsonl:2: field 'id': id '0' appears twice" in res.output.replace("\n", "")
    (tmp_path / "short.jsonl").write_text('{"id": 0, "prediction": "x"}\n')
    res = runner.invoke(app, ["score", "--task", "qa", "-p", str(tmp_path / "short.jsonl"), "-r", str(tmp_path / "refs.jsonl")])
    assert res.exit_code == 2 and "39 reference ids have no prediction" in res.output.replace("\n", "")


def test_data_check_of_your_own_csv_takes_format_and_columns_from_set(tmp_path):
    rows = ["ticket,category"] + [f"my card {i} has not arrived,card" for i in range(12)] + \
        [f"what rate applies to {c} today,rate" for c in "abcdefghijkl"]
    path = tmp_path / "tickets.csv"
    path.write_text("\n".join(rows) + "\n")
    res = runner.invoke(app, ["data", "check", str(path), "--no-tokens", "--json", "--out", str(tmp_path / "rep"),
                              "--set", "data.format=text_label", "--set", "data.columns={text: ticket, label: category}"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert s["format"] == "text_label" and s["columns"] == {"text": "ticket", "label": "category"}
    assert s["rows_read"] == 24
