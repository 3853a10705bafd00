"""`tunesmith compare`: differing config keys, key figures and one plot of every run's loss curves."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from PIL import Image
from typer.testing import CliRunner

from tests.run_helpers import make_tiny_project, run_tiny
from tunesmith.cli import app
from tunesmith.runs.compare import config_differences

runner = CliRunner()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_model_dir):
    """Run A with lr 0.01 (in-process) and run B with --set train.lr=0.02 (through the CLI)."""
    project = make_tiny_project(tmp_path_factory.mktemp("compare"), tiny_model_dir)
    a = run_tiny(project)
    res = runner.invoke(app, ["run", "-c", str(project), "--set", "train.lr=0.02", "--json"])
    assert res.exit_code == 0, res.output
    return a.root, project.parent / "runs" / json.loads(res.stdout)["run_id"]


def _compare(args, runs_dir):
    return runner.invoke(app, ["compare", *args, "--runs-dir", str(runs_dir)])


def test_compare_lists_only_the_differing_config_and_the_key_figures(two_runs, tmp_path):
    a, b = two_runs
    res = _compare([a.name, b.name, "--out", str(tmp_path / "cmp"), "--json"], a.parent)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert [r["label"] for r in out["runs"]] == [a.name, b.name]
    assert out["config"] == {"train.lr": [0.01, 0.02]}  # everything else was the same
    reports = [json.loads((r / "report.json").read_text()) for r in (a, b)]
    figures = out["figures"]
    assert figures["tuned"] == [r["tuned"]["metrics"]["accuracy"] for r in reports]
    assert figures["baseline"] == [r["baseline"]["metrics"]["accuracy"] for r in reports]
    assert figures["final_train_loss"] == [r["train"]["final_train_loss"] for r in reports]
    assert figures["best_val_loss"] == [r["train"]["best_val_loss"] for r in reports]
    assert figures["tokens_per_second"] == [r["train"]["tokens_per_second"] for r in reports]
    assert figures["peak_rss_mb"] == [r["train"]["peak_rss_mb"] for r in reports]
    assert figures["verdict"] == [r["verdict"] for r in reports] and figures["status"] == ["completed"] * 2
    assert figures["data_hash"][0] == figures["data_hash"][1] is not None  # same data, so the runs are comparable
    assert json.loads((tmp_path / "cmp" / "comparison.json").read_text()) == out


def test_the_plot_is_a_png_with_both_runs_curves(two_runs, tmp_path):
    a, b = two_runs
    res = _compare([str(a), str(b), "--out", str(tmp_path)], a.parent)
    assert res.exit_code == 0, res.output
    plot = tmp_path / "loss_curves.png"
    assert f"Plot: {plot}" in res.stdout and "train.lr" in res.stdout and "0.02" in res.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 20_000
    image = Image.open(plot)
    assert image.width > 800 and image.height > 300
    pixels = np.asarray(image.convert("RGB"), dtype=float) / 255
    for colour in ("tab:blue", "tab:orange"):  # one colour per run, in both panels
        near = np.abs(pixels - np.array(to_rgb(colour))).max(axis=2) < 0.02
        left, right = near[:, : image.width // 2].sum(), near[:, image.width // 2 :].sum()
        assert left > 100 and right > 100, colour


def test_a_run_that_never_trained_compares_without_curves(two_runs, tmp_path):
    a, _ = two_runs
    broken = tmp_path / "runs" / "20250101-000000-classification"
    shutil.copytree(a, broken, ignore=shutil.ignore_patterns("metrics.jsonl", "report.json"))
    res = _compare([str(a), str(broken), "--out", str(tmp_path / "cmp"), "--json"], a.parent)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["figures"]["tuned"][1] is None and out["figures"]["tuned"][0] is not None
    assert (tmp_path / "cmp" / "loss_curves.png").stat().st_size > 10_000


@pytest.mark.parametrize("refs, message", [
    (["A"], "at least two runs"),
    (["A", "A"], "the same run is given twice"),
    (["A", "no-such-run"], "no run 'no-such-run'"),
])
def test_bad_run_references_exit_2(two_runs, tmp_path, refs, message):
    a, _ = two_runs
    res = _compare([a.name if r == "A" else r for r in refs] + ["--out", str(tmp_path)], a.parent)
    assert res.exit_code == 2 and message in res.output


def test_config_differences_flattens_and_counts_absent_keys():
    first = {"train": {"lr": 0.01, "epochs": 1}, "data": {"columns": {}, "train": ["a.jsonl"]}}
    second = {"train": {"lr": 0.01, "epochs": 2}, "data": {"columns": {}, "train": ["b.jsonl"]}, "new": {"key": 1}}
    assert config_differences([first, second]) == {"train.epochs": [1, 2], "data.train": [["a.jsonl"], ["b.jsonl"]],
                                                   "new.key": [None, 1]}
    # an empty mapping against a filled one is its inner keys only; equal values of other types are no difference
    third = {"train": {"lr": 1e-2, "epochs": 1.0}, "data": {"columns": {"text": "ticket"}, "train": ["a.jsonl"]}}
    assert config_differences([first, third]) == {"data.columns.text": [None, "ticket"]}
