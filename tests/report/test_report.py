"""Verdicts and comparisons."""

import pytest

from tunesmith.report.build import compare_metrics
from tunesmith.report.plots import plot_loss


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
