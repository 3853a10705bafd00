"""``tunesmith export --merge``: a plain model folder whose greedy outputs match the adapter model's."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.config import load_config
from tunesmith.data.encode import encode_prompt
from tunesmith.data.prepare import Splits
from tunesmith.inference.generate import generate_batched
from tunesmith.models.load import load_base_model

runner = CliRunner()


@pytest.mark.parametrize("method,options", [("lora", "{}"), ("dora", "{}"), ("ia3", "{}"),
                                            ("freeze", "{trainable_blocks: 1}")])
def test_merged_model_generates_what_the_adapter_model_generated(tiny_project, tmp_path, method, options):
    res = runner.invoke(app, ["run", "-c", str(tiny_project / "tunesmith.yaml"), "--json",
                              "--set", f"adapter.method={method}", "--set", f"adapter.options={options}",
                              "--set", "train.lr=0.02", "--set", "eval.forgetting.enabled=false"])
    assert res.exit_code == 0, res.output
    run_dir = json.loads(res.stdout)["run_dir"]
    out = tmp_path / "merged"
    res = runner.invoke(app, ["export", "--run", run_dir, "--merge", str(out), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["method"] == method
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert not (out / "adapter_config.json").exists()

    cfg, _ = load_config(Path(run_dir) / "config.yaml")
    splits = Splits.load(Path(run_dir) / "data")
    merged = load_base_model(out)
    prompts = [encode_prompt(merged.tokenizer, ex, splits.system_prompt, cfg.model.max_seq_len) for ex in splits.test]
    outputs = generate_batched(merged, prompts, cfg.eval.max_new_tokens, cfg.eval.batch_size)
    tuned = [json.loads(x) for x in open(f"{run_dir}/predictions/tuned.jsonl")]
    assert outputs == [row["output"] for row in tuned]


def test_prefix_adapter_cannot_be_merged_and_says_so(tiny_project, tmp_path):
    res = runner.invoke(app, ["run", "-c", str(tiny_project / "tunesmith.yaml"), "--json", "--set", "adapter.method=prefix",
                              "--set", "adapter.options={num_virtual_tokens: 4}", "--set", "eval.forgetting.enabled=false"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["export", "--run", json.loads(res.stdout)["run_dir"], "--merge", str(tmp_path / "m")])
    assert res.exit_code == 2 and "cannot be merged" in res.output


def test_qlora_run_stops_before_any_work_on_a_cpu(tiny_project):
    res = runner.invoke(app, ["run", "-c", str(tiny_project / "tunesmith.yaml"), "--set", "adapter.method=qlora"])
    assert res.exit_code == 2
    assert "needs a CUDA GPU" in res.output and "adapter.method: lora" in res.output
    assert not (tiny_project / "runs").exists()
