"""The training benchmark's table for people, with and without the evaluation columns."""

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("train_speed", Path(__file__).parents[1] / "bench" / "train_speed.py")
train_speed = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train_speed)


def _recipe(tps, evaluated=True, computed=None):
    row = {"tokens_per_second": tps, "computed_tokens_per_second": computed or tps, "seconds": 30.0, "final_train_loss": 0.15, "peak_rss_mib": 2048.0,
           "fast_path": {"packing": True}}
    if evaluated:
        row.update(val_loss=0.2, test_accuracy=0.75)
    return row


def test_report_prints_both_recipes_and_the_ratios(capsys):
    results = {"peak_gflops": {"bf16": 424.0, "fp32": 192.1}, "cpu_bf16_autocast": True,
               "plain": _recipe(150.0), "tunesmith": _recipe(350.0, computed=140.0), "speed_ratio": 2.33, "memory_ratio": 0.5,
               "tunesmith_model_gflops": 170.0, "tunesmith_mfu": {"bf16": 0.401, "fp32": 0.885}}
    train_speed.print_report(results)
    out = capsys.readouterr().out
    assert "plain" in out and "0.2000     0.750" in out and "2.33x" in out and "40.1% of the bf16" in out
    row = [ln for ln in out.splitlines() if ln.startswith("tunesmith ")][0].split()
    assert row[1:3] == ["350.0", "140.0"]  # every example's tokens per second, then the tokens computed


def test_report_without_evaluation_shows_dashes(capsys):
    results = {"peak_gflops": {"bf16": 424.0, "fp32": 192.1}, "cpu_bf16_autocast": True,
               "tunesmith": _recipe(350.0, evaluated=False)}
    train_speed.print_report(results)
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("tunesmith ")][0]
    assert line.split()[5:7] == ["-", "-"]
