"""Resume after SIGKILL, determinism, transfer from an existing adapter, and two-process DDP on the tiny model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.runs.folder import RunPaths
from tunesmith.train.checkpoint import latest_checkpoint

runner = CliRunner()
# Long enough to cross an epoch boundary (6 steps per epoch here) and to validate and checkpoint several times.
OVERRIDES = ["train.max_steps=9", "train.epochs=3", "train.eval_every=2", "train.checkpoint_every=1",
             "train.early_stopping_patience=null", "eval.forgetting.enabled=false", "eval.max_examples=6"]

KILLER = """
import os, signal, sys
from pathlib import Path
from tunesmith.config import load_config
from tunesmith.recipes.finetune import run_pipeline

cfg, base = load_config(Path(sys.argv[1]), sys.argv[3:])
kill_at = int(sys.argv[2])

def on_log(row):
    if row.get("step") == kill_at and "train_loss" in row:
        os.kill(os.getpid(), signal.SIGKILL)  # no clean-up of any kind, as when a machine dies

run_pipeline(cfg, base, on_log=on_log)
"""


def _run(project: Path, *args: str) -> dict:
    res = runner.invoke(app, ["run", "-c", str(project / "tunesmith.yaml"), "--json", *args])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def _sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def _adapter(run_dir: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(run_dir) / "adapter" / "adapter_model.safetensors"))


def _train_losses(run_dir: str | Path) -> list[float]:
    rows = [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [r["train_loss"] for r in rows if "train_loss" in r]


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol)


def test_killed_run_resumes_to_the_same_adapter_as_an_uninterrupted_one(tiny_project):
    project = tiny_project / "tunesmith.yaml"
    killed = subprocess.run([sys.executable, "-c", KILLER, str(project), "6", *OVERRIDES], capture_output=True,
                            text=True, cwd=tiny_project, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    (run_root,) = [p for p in (tiny_project / "runs").iterdir() if p.is_dir()]
    run = RunPaths(run_root)
    assert json.loads(run.status.read_text())["status"] == "running"  # it never got to say anything else
    assert latest_checkpoint(run.checkpoints).name == "step-000005"
    assert not (run.adapter / "adapter_model.safetensors").exists()

    resumed = _run(tiny_project, "--resume", run.id)
    assert resumed["run_dir"] == str(run_root) and resumed["train"]["resumed_from"] == 5
    assert json.loads(run.status.read_text())["status"] == "completed"
    straight = _run(tiny_project, *_sets(OVERRIDES))
    assert straight["run_dir"] != resumed["run_dir"]

    _assert_same(_adapter(resumed["run_dir"]), _adapter(straight["run_dir"]), atol=1e-6)
    assert _train_losses(resumed["run_dir"]) == pytest.approx(_train_losses(straight["run_dir"]), abs=1e-6)
    assert resumed["tuned"] == straight["tuned"] and resumed["baseline"] == straight["baseline"]


def test_same_seed_same_data_same_config_same_result(tiny_project):
    a = _run(tiny_project, *_sets(["train.max_steps=4"]))
    b = _run(tiny_project, *_sets(["train.max_steps=4"]))
    _assert_same(_adapter(a["run_dir"]), _adapter(b["run_dir"]), atol=0)
    assert a["data"]["data_hash"] == b["data"]["data_hash"]
    c = _run(tiny_project, *_sets(["train.max_steps=4", "project.seed=7"]))
    assert any(not torch.equal(x, y) for x, y in zip(_adapter(a["run_dir"]).values(), _adapter(c["run_dir"]).values()))


def test_init_from_continues_an_existing_adapter(tiny_project):
    first = _run(tiny_project, *_sets(["train.max_steps=3"]))
    # Zero steps of training is not allowed, so continue with a learning rate too small to move the weights.
    cont = _run(tiny_project, *_sets(["train.max_steps=1", "train.lr=1e-12", f"adapter.init_from={first['run_id']}",
                                      "adapter.dropout=0"]))
    _assert_same(_adapter(cont["run_dir"]), _adapter(first["run_dir"]), atol=1e-8)
    res = runner.invoke(app, ["run", "-c", str(tiny_project / "tunesmith.yaml"),
                              "--set", f"adapter.init_from={first['run_id']}", "--set", "adapter.method=dora"])
    assert res.exit_code == 2 and "holds a lora adapter, but adapter.method is dora" in res.output


def test_two_process_ddp_matches_one_process_with_the_same_effective_batch(tiny_project):
    """A real ``accelerate launch`` of two CPU processes (gloo), batch 4 each, against one process with batch 8."""
    common = ["train.max_steps=4", "adapter.dropout=0", "eval.forgetting.enabled=false", "eval.baseline=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "tunesmith", "run", "-c", "tunesmith.yaml", "--json",
                          "--launcher", "accelerate", "--num-processes", "2",
                          *_sets([*common, "train.batch_size=4"])],
                         capture_output=True, text=True, cwd=tiny_project, env=env, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    two = json.loads(ddp.stdout)
    assert "Launching 2 training processes" in ddp.stderr
    one = _run(tiny_project, *_sets([*common, "train.batch_size=8"]))
    assert two["train"]["steps"] == one["train"]["steps"] == 4
    # Packed rows of 4 against rows of 8 sum in another order; Adam's normalisation magnifies that
    # rounding in near-zero gradients, so allow 1% of one step (lr 0.01).
    _assert_same(_adapter(two["run_dir"]), _adapter(one["run_dir"]), atol=1e-4)
    assert _train_losses(two["run_dir"]) == pytest.approx(_train_losses(one["run_dir"]), abs=1e-5)
