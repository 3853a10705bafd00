"""``tunesmith export --merge``: a plain model folder whose greedy outputs match the adapter model's."""

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.config import load_config
from tunesmith.data.encode import render_prompt_text
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
    # Plain transformers, the user's message alone: the exported chat template adds the run's system prompt.
    plain = AutoTokenizer.from_pretrained(out)
    texts = [plain.apply_chat_template([{"role": "user", "content": ex.prompt}], tokenize=False,
                                       add_generation_prompt=True) for ex in splits.test]
    assert texts == [render_prompt_text(merged.tokenizer, ex, splits.system_prompt) for ex in splits.test]
    assert splits.system_prompt and splits.system_prompt.split(":")[0] in texts[0]
    prompts = [plain(text, add_special_tokens=False)["input_ids"][-cfg.model.max_seq_len:] for text in texts]
    outputs = generate_batched(merged, prompts, cfg.eval.max_new_tokens, cfg.eval.batch_size)
    tuned = [json.loads(x) for x in open(f"{run_dir}/predictions/tuned.jsonl")]
    assert outputs == [row["output"] for row in tuned]
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation.get("do_sample") in (False, None) and generation["max_new_tokens"] == cfg.eval.max_new_tokens
    card = (out / "README.md").read_text()
    report = json.loads((Path(run_dir) / "report.json").read_text())
    assert f"Verdict: **{report['verdict']}**" in card and all(f"`{label}`" in card for label in splits.labels)
    assert report["data"]["data_hash"] in card


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


def test_adapter_export_is_portable_and_reproduces_the_run_with_plain_peft(tiny_project, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    res = runner.invoke(app, ["run", "-c", str(tiny_project / "tunesmith.yaml"), "--json", "--set", "train.lr=0.02",
                              "--set", "eval.forgetting.enabled=false"])
    assert res.exit_code == 0, res.output
    run_dir = Path(json.loads(res.stdout)["run_dir"])
    out = tmp_path / "adapter"
    res = runner.invoke(app, ["export", "--run", str(run_dir), "--adapter", str(out), "--json"])
    assert res.exit_code == 0, res.output
    cfg, _ = load_config(run_dir / "config.yaml")
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == cfg.model.base  # as the project named it, no cache path
    assert "tunesmith" not in adapter_config["base_model_name_or_path"]
    assert (out / "adapter_model.safetensors").is_file() and (out / "README.md").is_file()
    # plain transformers + peft: the exported tokenizer's template brings the system prompt
    splits = Splits.load(run_dir / "data")
    plain = AutoTokenizer.from_pretrained(out)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(adapter_config["base_model_name_or_path"]), out)
    lm = load_base_model(Path(cfg.model.base))
    lm.model = model
    texts = [plain.apply_chat_template([{"role": "user", "content": ex.prompt}], tokenize=False,
                                       add_generation_prompt=True) for ex in splits.test]
    prompts = [plain(text, add_special_tokens=False)["input_ids"][-cfg.model.max_seq_len:] for text in texts]
    outputs = generate_batched(lm, prompts, cfg.eval.max_new_tokens, cfg.eval.batch_size)
    assert outputs == [json.loads(x)["output"] for x in (run_dir / "predictions" / "tuned.jsonl").open()]
    # neither or both of --merge and --adapter is a usage error
    assert runner.invoke(app, ["export", "--run", str(run_dir)]).exit_code == 2


def test_the_embedded_base_is_named_by_its_hub_id_with_a_note():
    from tunesmith.ops.export import portable_base
    base, note = portable_base("smollm2-135m-instruct")
    assert base == "HuggingFaceTB/SmolLM2-135M-Instruct" and "Q4_1" in note
    assert portable_base("/models/mine") == ("/models/mine", None)
