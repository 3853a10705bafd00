"""The whole pipeline on the tiny model: every run artefact, loadable by the libraries users know."""

import csv
import io
import json
import random
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from tests.conftest import ChatServer
from tunesmith.cli import app
from tunesmith.config import load_config
from tunesmith.data.prepare import Splits
from tunesmith.errors import ConfigError, UserError
from tunesmith.ops.chat import chat_once
from tunesmith.ops.reevaluate import evaluate_run, load_run
from tunesmith.recipes.finetune import run_pipeline
from tunesmith.report.schema import SCHEMA_VERSION
from tunesmith.project import init_project
from tunesmith.runs.store import query_runs


@pytest.fixture()
def finished_run(tiny_project):
    cfg, base = load_config(tiny_project / "tunesmith.yaml")
    return run_pipeline(cfg, base), tiny_project


def test_run_writes_every_artefact(finished_run):
    run, _ = finished_run
    for name in ("config.yaml", "metrics.jsonl", "report.md", "report.json", "report.html", "loss.png", "confusion.png", "status.json",
                 "predictions/baseline.jsonl", "predictions/tuned.jsonl", "data/manifest.json",
                 "adapter/adapter_config.json", "adapter/adapter_model.safetensors", "versions.json"):
        assert (run.root / name).is_file(), name
    report = json.loads(run.report_json.read_text())
    assert report["schema_version"] == SCHEMA_VERSION
    import torch, transformers  # noqa: E401  (the versions the run used, recorded in the folder and the report)
    assert report["versions"]["torch"] == torch.__version__ and report["versions"]["transformers"] == transformers.__version__
    assert json.loads((run.root / "versions.json").read_text()) == report["versions"]
    fast = report["train"]["fast_path"]  # every part applied to the tiny Llama on this CPU, and nothing to warn about
    assert fast["warnings"] == [] and fast["rotary_attention"] == fast["swiglu_mlps"] == 2 and fast["packing"]
    assert report["objective"] == {"task": "classification", "metric": "accuracy", "target": 0.0, "higher_is_better": True}
    assert set(report["baseline"]["metrics"]) >= {"accuracy", "macro_f1", "loss", "perplexity"}
    assert set(report["tuned"]["metrics"]) == set(report["baseline"]["metrics"])
    assert report["verdict"] == "met"  # target 0.0 is always reached
    assert {"seconds", "tokens", "tokens_per_second", "peak_rss_mb"} <= set(report["train"])
    assert report["data"]["train"] + report["data"]["validation"] + report["data"]["test"] == 54
    md = run.report_md.read_text()
    for part in ("Verdict", "| accuracy ⭐", "tokens/s", "peak memory", "Best", "Worst", "train **",
                 "permutation test", "Small test set", "By slice", "Error analysis", "Forgetting"):
        assert part in md
    sig = report["significance"]["accuracy"]
    assert sig["diff"]["low"] <= sig["diff"]["value"] <= sig["diff"]["high"] and 0 < sig["p_value"] <= 1
    assert report["interval"]["low"] <= report["tuned"]["metrics"]["accuracy"] <= report["interval"]["high"]
    assert {r["value"] for r in report["slices"]["rows"]} == set(report["data"]["labels"])
    assert set(report["errors"]["counts"]) == {"regressed", "improved", "still_wrong"}
    fg = report["forgetting"]
    assert fg["perplexity"]["before"] > 1 and fg["perplexity"]["after"] > 1 and len(fg["choice"]) == 60
    change = f"{fg['choice_probability']['change']:+.1%}"  # one figure, written the same in both reports
    assert change in md and change in run.report_html.read_text()
    assert {"general before", "general after"} <= set(report["timings"])
    matrix = report["confusion"]["tuned"]
    assert sum(map(sum, matrix)) == report["data"]["test"] and len(matrix[0]) == len(report["data"]["labels"]) + 1
    page = run.report_html.read_text()
    assert page.index("Verdict") < page.index("Baseline vs tuned") and page.count("data:image/png;base64,") == 3
    # answers decoded within the label set: every prediction a label, with its confidence and calibration
    cal = report["calibration"]["tuned"]
    assert cal["count"] == report["data"]["test"] and 0 <= cal["ece"] <= 1 and sum(b["count"] for b in cal["bins"]) == cal["count"]
    assert (run.root / "calibration.png").is_file() and "calibration error" in md
    assert run.loss_plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    preds = [json.loads(line) for line in (run.predictions / "tuned.jsonl").read_text().splitlines()]
    assert len(preds) == report["data"]["test"]
    assert all(p["prediction"] in report["data"]["labels"] and 0 < p["confidence"] <= 1 for p in preds)
    assert {"input", "reference", "output"} <= set(preds[0])
    assert json.loads(run.status.read_text())["status"] == "completed"


def test_adapter_is_a_standard_peft_adapter(finished_run):
    run, _ = finished_run
    cfg, _ = load_config(run.config)
    base = AutoModelForCausalLM.from_pretrained(cfg.model.base)
    model = PeftModel.from_pretrained(base, run.adapter)
    ids = torch.tensor([[1, 5, 9, 12]])
    assert model(input_ids=ids).logits.shape[-1] == base.config.vocab_size


def test_stored_config_and_splits_reproduce_the_evaluation(finished_run):
    run, project = finished_run
    run2, cfg, splits = load_run(run.id, project / "runs")
    assert run2.root == run.root
    assert isinstance(splits, Splits) and splits.labels
    result = evaluate_run(run, cfg, splits, base=False)
    report = json.loads(run.report_json.read_text())
    assert result.metrics["accuracy"] == pytest.approx(report["tuned"]["metrics"]["accuracy"])
    base_result = evaluate_run(run, cfg, splits, base=True)
    assert base_result.metrics["accuracy"] == pytest.approx(report["baseline"]["metrics"]["accuracy"])
    assert isinstance(chat_once(run, cfg, splits, "Where is my card?", 3), str)
    rows = query_runs(project / "runs")
    assert rows[0]["id"] == run.id and rows[0]["status"] == "completed" and rows[0]["metric"] == "accuracy"


def test_unknown_metric_is_rejected_before_any_work(tiny_project):
    cfg, base = load_config(tiny_project / "tunesmith.yaml", ["objective.metric=acuracy"])
    with pytest.raises(ConfigError, match="did you mean 'accuracy'"):
        run_pipeline(cfg, base)
    assert not (tiny_project / "runs").exists()


@pytest.mark.parametrize("task, metric", [("qa", "token_f1"), ("summarization", "rougeL"), ("generation", "rougeL")])
def test_every_task_runs_end_to_end(tmp_path, tiny_model_dir, task, metric):
    """Each task's example project, on the tiny model: the generative metrics land in the report."""
    project = init_project(tmp_path / task, task)
    cfg, base = load_config(project, [f"model.base={tiny_model_dir}", "train.max_steps=2", "eval.max_new_tokens=4",
                                      "train.batch_size=4"])
    run = run_pipeline(cfg, base)
    report = json.loads(run.report_json.read_text())
    assert report["objective"]["metric"] == metric
    assert {"rouge1", "rouge2", "rougeL", "bleu"} <= set(report["tuned"]["metrics"]) or task == "qa"
    assert {"exact_match", "token_f1"} <= set(report["tuned"]["metrics"]) or task != "qa"
    assert report["verdict"] in ("met", "not met", "inconclusive") and report["verdict_reason"]


def run_generation_project(folder, model_dir, rows):
    """Write ``rows`` as a generation project's data and run it for two steps on the tiny model."""
    (folder / "data").mkdir()
    (folder / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "tunesmith.yaml").write_text("objective: {task: generation}\ndata: {dedup: {near: false}}\n")
    cfg, base = load_config(folder / "tunesmith.yaml", [f"model.base={model_dir}", "train.max_steps=2",
                                                        "train.batch_size=4", "eval.max_new_tokens=4"])
    return run_pipeline(cfg, base)


def test_multi_turn_chat_data_trains_and_evaluates(tmp_path, tiny_model_dir):
    rows = []
    for i in range(30):
        rows.append({"messages": [{"role": "user", "content": f"Hi, I am customer {i}."},
                                  {"role": "assistant", "content": "Hello! How can I help?"},
                                  {"role": "user", "content": "Where is my card?"},
                                  {"role": "assistant", "content": f"Your card {i} is on its way."}]})
    run = run_generation_project(tmp_path, tiny_model_dir, rows)
    report = json.loads(run.report_json.read_text())
    assert report["data"]["format"] == "messages" and report["data"]["test"] == 3
    tuned = [json.loads(line) for line in (run.predictions / "tuned.jsonl").read_text().splitlines()]
    assert tuned[0]["input"] == "Where is my card?" and tuned[0]["reference"].startswith("Your card")


def test_plain_text_continued_pretraining_runs(tmp_path, tiny_model_dir):
    rng = random.Random(0)
    words = "the bank card account transfer payment arrives within three working days after approval".split()
    rows = [{"text": " ".join(rng.choice(words) for _ in range(12)) + f" note {i}."} for i in range(30)]
    run = run_generation_project(tmp_path, tiny_model_dir, rows)
    manifest = json.loads((run.data / "manifest.json").read_text())
    assert manifest["format"] == "text" and manifest["system_prompt"] is None
    assert manifest["preview"]["text"] == manifest["preview"]["loss_on"]  # no template, loss on every token
    tuned = [json.loads(line) for line in (run.predictions / "tuned.jsonl").read_text().splitlines()]
    assert tuned[0]["input"] and tuned[0]["reference"]  # the first half is continued, the second half scores it


def test_prepared_data_and_loss_weights_run(tmp_path, tiny_project, tiny_model_dir):
    res = CliRunner().invoke(app, ["data", "prepare", "-c", str(tiny_project / "tunesmith.yaml"), "--out",
                                   str(tmp_path / "prepared"), "--set", "data.balance.strategy=loss_weights", "--json"])
    assert res.exit_code == 0, res.output
    prepared = json.loads(res.stdout)
    cfg, base = load_config(tiny_project / "tunesmith.yaml", [f"data.prepared={tmp_path / 'prepared'}"])
    run = run_pipeline(cfg, base)
    report = json.loads(run.report_json.read_text())
    assert report["data"]["data_hash"] == prepared["data_hash"]
    assert report["data"]["balance"]["strategy"] == "loss_weights"


def test_human_review_round_trip_lands_in_the_report(finished_run, tmp_path):
    run, project = finished_run
    runs = ["--runs-dir", str(project / "runs")]
    res = CliRunner().invoke(app, ["human-eval", "export", "--run", run.id, *runs, "--json"])
    assert res.exit_code == 0, res.output
    sheet = Path(json.loads(res.stdout)["csv"])
    rows = sheet.read_text().splitlines()
    header = rows[0].split(",")
    filled = [rows[0]]
    for line in rows[1:]:
        cells = next(csv.reader([line]))
        cells[header.index("preference")] = "A"
        cells[header.index("A_correctness")] = "4"
        buf = io.StringIO()
        csv.writer(buf).writerow(cells)
        filled.append(buf.getvalue().strip())
    (tmp_path / "kim.csv").write_text("\n".join(filled) + "\n")
    res = CliRunner().invoke(app, ["human-eval", "import", str(tmp_path / "kim.csv"), "--run", run.id, *runs, "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    n = json.loads(run.report_json.read_text())["data"]["test"]
    win = summary["win_rate"]
    assert win["tuned_wins"] + win["baseline_wins"] == n and summary["agreement"]["method"] is None
    assert "Human review (1 raters" in run.report_md.read_text() and "Human review" in run.report_html.read_text()


def test_llm_judge_through_an_endpoint_lands_in_the_report(finished_run, monkeypatch):
    run, project = finished_run
    monkeypatch.setenv("TEST_JUDGE_KEY", "secret-key")
    server = ChatServer(lambda body: '{"correctness": 4, "completeness": 3, "tone": 5, "adherence": 4, "winner": "tie", '
                                     '"rationale": "both fine"}')
    try:
        args = ["judge", "--run", run.id, "--runs-dir", str(project / "runs"), "--judge", "openai",
                "--endpoint", server.url, "--model", "j", "--api-key-env", "TEST_JUDGE_KEY", "--max-items", "4"]
        text = CliRunner().invoke(app, args)  # as a person reads it: counts and sentences, not a JSON dump
        res = CliRunner().invoke(app, [*args, "--json"])
    finally:
        server.close()
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    # four items are fewer than a mean is given for: every reply is counted, no mean or win rate is claimed
    assert summary["items"] == 4 and summary["rubric_judged"]["tone"] == 4 and summary["rubric"]["tone"] is None
    assert summary["pairwise"]["tie"] == 4 and summary["pairwise"]["win_rate"] is None
    assert text.exit_code == 0 and "tone: no mean (4 items judged)" in text.output and "{" not in text.output
    lines = [json.loads(line) for line in (run.root / "judge.jsonl").read_text().splitlines()]
    assert len(lines) == 8 and all(line["rationale" if line["kind"] == "rubric" else "rationales"] for line in lines)
    assert "LLM judge" in run.report_md.read_text() and json.loads(run.report_json.read_text())["llm_judge"]["items"] == 4


def test_fairness_report_by_attribute_and_counterfactual_swaps(tiny_project):
    path = tiny_project / "data" / "train.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({**r, "channel": ("app", "web")[i % 2]}) + "\n" for i, r in enumerate(rows)))
    cfg, base = load_config(tiny_project / "tunesmith.yaml",
                            ["eval.fairness.attribute=channel", "eval.fairness.counterfactual_swaps=[[card, phone]]"])
    run = run_pipeline(cfg, base)
    fair = json.loads(run.report_json.read_text())["fairness"]
    groups = fair["groups"]
    assert {g["value"] for g in groups["groups"]} == {"app", "web"} and sum(g["count"] for g in groups["groups"]) == 6
    assert groups["ratio"] is None or 0 <= groups["ratio"] <= 1
    cf = fair["counterfactual"]
    assert cf["probed"] >= 1 and 0 <= cf["changed"] <= cf["probed"]
    assert "## Fairness" in run.report_md.read_text() and "Fairness" in run.report_html.read_text()


@pytest.mark.parametrize(("override", "message"), [
    ("data.train=data/missing.jsonl", "data.train: .*missing.jsonl: file not found"),
    ("model.base=/nonexistent/model", "model.base '/nonexistent/model' is not"),
])
def test_a_run_that_fails_on_its_config_leaves_no_run_behind(tiny_project, override, message):
    cfg, base = load_config(tiny_project / "tunesmith.yaml", [override])
    with pytest.raises(UserError, match=message):
        run_pipeline(cfg, base)
    runs = tiny_project / "runs"
    assert not runs.exists() or not [p for p in runs.iterdir() if p.is_dir()]
