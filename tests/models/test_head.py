"""The classification head (``adapter.head: classify``): it trains, saves, reloads, merges and exports with the
same predictions, and plain transformers reads the export."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from typer.testing import CliRunner

from tests.run_helpers import make_tiny_project, run_tiny
from tunesmith.cli import app
from tunesmith.config import load_config
from tunesmith.data.encode import fit_prompt
from tunesmith.data.prepare import Splits
from tunesmith.ops.reevaluate import evaluate_run

runner = CliRunner()


@pytest.fixture(scope="module")
def head_run(tmp_path_factory, tiny_model_dir):
    project = make_tiny_project(tmp_path_factory.mktemp("head"), tiny_model_dir)
    return run_tiny(project, "adapter.head=classify", "train.epochs=4", "train.max_steps=24", "train.lr=0.01",
                    "train.eval_every=6")


def test_the_head_trains_and_reports_every_label_probability(head_run):
    rows = [json.loads(line) for line in head_run.metrics.read_text().splitlines()]
    losses = [r["train_loss"] for r in rows if "train_loss" in r]
    assert losses[-1] < losses[0]  # the head learns
    report = json.loads(head_run.report_json.read_text())
    labels = report["data"]["labels"]
    preds = [json.loads(line) for line in (head_run.predictions / "tuned.jsonl").read_text().splitlines()]
    for p in preds:
        assert p["prediction"] in labels and set(p["probabilities"]) == set(labels)
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert p["confidence"] == pytest.approx(max(p["probabilities"].values()), abs=1e-5)
    # the baseline answered generatively, given the label list; no label list in the head's own prompt
    base = [json.loads(line) for line in (head_run.predictions / "baseline.jsonl").read_text().splitlines()]
    assert "probabilities" not in base[0] and "perplexity" not in report["tuned"]["metrics"]
    assert Splits.load(head_run.data).system_prompt is None


def test_reloaded_merged_and_exported_heads_give_the_same_predictions(head_run, tmp_path):
    cfg, _ = load_config(head_run.config)
    splits = Splits.load(head_run.data)
    stored = [json.loads(line)["prediction"] for line in (head_run.predictions / "tuned.jsonl").read_text().splitlines()]
    again = evaluate_run(head_run, cfg, splits, base=False)  # base + saved adapter and head, loaded anew
    assert [r["prediction"] for r in again.predictions] == stored
    out = tmp_path / "merged"
    res = runner.invoke(app, ["export", "--run", str(head_run.root), "--merge", str(out), "--json"])
    assert res.exit_code == 0, res.output
    # plain transformers: AutoModelForSequenceClassification reads the merged folder with its labels
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    assert [model.config.id2label[i] for i in range(len(splits.labels))] == splits.labels
    plain = []
    for ex in splits.test:
        ids = fit_prompt(tok, ex, None, cfg.model.max_seq_len - 1)[0]
        with torch.no_grad():
            plain.append(model.config.id2label[int(model(input_ids=torch.tensor([ids])).logits.argmax(-1))])
    assert plain == stored
    res = runner.invoke(app, ["predict", str(Path(cfg.data.train[0] if isinstance(cfg.data.train, list) else cfg.data.train)),
                              "--run", str(head_run.root), "--out", str(tmp_path / "p.jsonl"), "--json"])
    assert res.exit_code == 0, res.output
    answers = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert all(a["prediction"] in splits.labels and "probabilities" in a for a in answers)


def test_head_needs_classification_and_an_adapter_that_is_not_virtual_tokens(tiny_project):
    res = runner.invoke(app, ["run", "-c", str(tiny_project / "tunesmith.yaml"), "--set", "adapter.head=classify",
                              "--set", "adapter.method=prefix"])
    assert res.exit_code == 2 and "virtual tokens" in res.output
    res = runner.invoke(app, ["run", "-c", str(tiny_project / "tunesmith.yaml"), "--set", "adapter.head=classify",
                              "--set", "objective.task=qa"])
    assert res.exit_code == 2 and "adapter.head: classify needs objective.task: classification" in res.output


def test_an_exported_head_adapter_reloads_with_plain_peft(head_run, tmp_path):
    from peft import PeftModel
    cfg, _ = load_config(head_run.config)
    splits = Splits.load(head_run.data)
    out = tmp_path / "adapter"
    res = runner.invoke(app, ["export", "--run", str(head_run.root), "--adapter", str(out), "--json"])
    assert res.exit_code == 0, res.output
    base = AutoModelForSequenceClassification.from_pretrained(
        cfg.model.base, num_labels=len(splits.labels), pad_token_id=AutoTokenizer.from_pretrained(out).pad_token_id)
    model = PeftModel.from_pretrained(base, out).eval()  # the head comes with the adapter (modules_to_save)
    tok = AutoTokenizer.from_pretrained(out)
    stored = [json.loads(line)["prediction"] for line in (head_run.predictions / "tuned.jsonl").read_text().splitlines()]
    plain = []
    for ex in splits.test:
        ids = fit_prompt(tok, ex, None, cfg.model.max_seq_len - 1)[0]
        with torch.no_grad():
            plain.append(splits.labels[int(model(input_ids=torch.tensor([ids])).logits.argmax(-1))])
    assert plain == stored
    assert "AutoModelForSequenceClassification" in (out / "README.md").read_text()


def test_a_sweep_trains_the_head_in_every_trial(tiny_project):
    """``sweep`` with ``adapter.head: classify``: every trial a head run, valued by its head's validation loss."""
    path = tiny_project / "tunesmith.yaml"
    path.write_text(path.read_text() + "sweep: {space: {train.lr: {low: 1.0e-3, high: 0.05, log: true}}}\n")
    sets = ["adapter.head=classify", "sweep.pruner.enabled=false", "train.max_steps=4", "train.eval_every=2"]
    res = runner.invoke(app, ["sweep", "-c", str(path), "--trials", "2", "--json", *(f"--set={s}" for s in sets)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["trials_finished"] == 2
    runs = [p for p in (tiny_project / "runs").iterdir() if (p / "report.json").is_file()]
    assert len(runs) == 2
    for root in runs:
        cfg, _ = load_config(root / "config.yaml")
        assert cfg.adapter.head == "classify"
        report = json.loads((root / "report.json").read_text())
        val = [json.loads(line)["val_loss"] for line in (root / "metrics.jsonl").read_text().splitlines()
               if "val_loss" in line]
        assert report["train"]["best_val_loss"] == pytest.approx(min(val))
        tuned = [json.loads(line) for line in (root / "predictions" / "tuned.jsonl").read_text().splitlines()]
        assert tuned and all(sum(t["probabilities"].values()) == pytest.approx(1, abs=1e-3) for t in tuned)
