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
