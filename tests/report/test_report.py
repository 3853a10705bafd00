"""Verdicts and comparisons."""

import pytest

from tunesmith.report.build import compare_metrics, verdict_for
from tunesmith.report.plots import plot_loss


@pytest.mark.parametrize("metric, target, tuned, baseline, verdict", [
    ("accuracy", 0.8, 0.85, 0.1, "met"),
    ("accuracy", 0.8, 0.75, 0.1, "not met"),
    ("perplexity", 5.0, 4.0, 20.0, "met"),
    ("perplexity", 5.0, 6.0, 20.0, "not met"),
    ("accuracy", None, 0.5, 0.4, "met"),
    ("accuracy", None, 0.4, 0.4, "not met"),
    ("loss", None, 0.3, 0.4, "met"),
])
def test_verdict(metric, target, tuned, baseline, verdict):
    assert verdict_for(metric, target, tuned, baseline)[0] == verdict


def test_comparison_changes():
    c = compare_metrics({"accuracy": 0.5, "loss": 2.0}, {"accuracy": 0.75, "loss": 1.0})
    assert c["accuracy"]["abs_change"] == pytest.approx(0.25)
    assert c["accuracy"]["rel_change"] == pytest.approx(0.5)
    assert c["loss"]["rel_change"] == pytest.approx(-0.5) and not c["loss"]["higher_is_better"]
    assert compare_metrics({"accuracy": 0.0}, {"accuracy": 0.5})["accuracy"]["rel_change"] is None


def test_loss_plot(tmp_path):
    hist = [{"step": 1, "train_loss": 2.0}, {"step": 2, "train_loss": 1.0}, {"step": 2, "val_loss": 1.2}]
    out = plot_loss(hist, tmp_path / "loss.png")
    assert out.read_bytes()[:4] == b"\x89PNG"
