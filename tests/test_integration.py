"""End to end on the real embedded model (SmolLM2-135M-Instruct), on a small budget."""

import json

import pytest
from typer.testing import CliRunner

from tunesmith.cli import app

pytestmark = pytest.mark.integration


def test_quickstart_on_the_embedded_model_beats_the_baseline(tmp_path):
    """A shortened quickstart: fewer examples and steps, but the real model, data and pipeline."""
    res = CliRunner().invoke(app, [
        "quickstart", str(tmp_path / "qs"), "--json",
        "--set", "data.max_examples=400", "--set", "train.max_steps=12", "--set", "train.eval_every=6",
    ])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert s["data"]["test"] == 40
    base, tuned = s["baseline"]["accuracy"], s["tuned"]["accuracy"]
    assert tuned >= base + 0.3, (base, tuned)
    assert s["train"]["tokens_per_second"] > 0
    report = (tmp_path / "qs" / "runs" / s["run_id"] / "report.md").read_text()
    assert "Verdict" in report


@pytest.fixture(scope="module")
def banking_project(tmp_path_factory):
    folder = tmp_path_factory.mktemp("methods") / "p"
    assert CliRunner().invoke(app, ["init", str(folder), "--task", "classification"]).exit_code == 0
    return folder


@pytest.mark.parametrize("method,options", [
    ("lora", "{}"), ("dora", "{}"), ("rslora", "{}"), ("ia3", "{}"), ("adalora", "{init_r: 24}"),
    ("prefix", "{num_virtual_tokens: 8}"), ("prompt", "{num_virtual_tokens: 8}"),
    ("freeze", "{trainable_blocks: 2}"), ("full", "{}"),
])
def test_every_cpu_method_runs_through_tunesmith_run(banking_project, method, options):
    """Each method trains the real model for a few steps, saves, and the saved weights are evaluated."""
    res = CliRunner().invoke(app, [
        "run", "-c", str(banking_project / "tunesmith.yaml"), "--json",
        "--set", f"adapter.method={method}", "--set", f"adapter.options={options}",
        "--set", "data.max_examples=120", "--set", "train.max_steps=3", "--set", "train.batch_size=8",
        "--set", "train.eval_every=3", "--set", "eval.max_examples=8", "--set", "eval.baseline=false",
        "--set", "eval.forgetting.enabled=false",
    ])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert s["train"]["steps"] == 3 and s["train"]["best_val_loss"] is not None
    assert "accuracy" in s["tuned"]
    assert any((banking_project / "runs" / s["run_id"] / "adapter").iterdir())
