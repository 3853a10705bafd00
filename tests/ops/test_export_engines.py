"""Exports for other engines: GGUF read back by transformers' GGUF loader, a vLLM adapter folder vLLM accepts."""

import json

import numpy as np
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from tests.run_helpers import make_tiny_project, run_tiny
from tunesmith.cli import app
from tunesmith.ops.gguf_export import gguf_name, permute_rotary

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    return run_tiny(make_tiny_project(tmp_path_factory.mktemp("exp"), tiny_model_dir), "model.precision=fp32")


@pytest.mark.parametrize("quant, tolerance", [("f16", 2e-3), ("q8_0", 2e-2)])
def test_gguf_reads_back_as_the_merged_model(run, tmp_path, quant, tolerance):
    merged = tmp_path / "merged"
    assert runner.invoke(app, ["export", "--run", str(run.root), "--merge", str(merged)]).exit_code == 0
    out = tmp_path / "gguf" / "model.gguf"
    res = runner.invoke(app, ["export", "--run", str(run.root), "--gguf", str(out), "--quant", quant, "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["quant"] == quant and (out.parent / "Modelfile").is_file()
    modelfile = (out.parent / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model.gguf") and "SYSTEM" in modelfile and "PARAMETER temperature 0" in modelfile
    want = AutoModelForCausalLM.from_pretrained(merged).state_dict()
    got = AutoModelForCausalLM.from_pretrained(out.parent, gguf_file=out.name).state_dict()
    compared = 0
    for name, tensor in want.items():
        if name not in got:
            assert name == "lm_head.weight"  # tied to the embedding, stored once
            continue
        scale = tensor.abs().max().item() or 1.0
        assert (got[name].float() - tensor.float()).abs().max().item() <= tolerance * scale, name
        compared += 1
    assert compared >= len([n for n in want if gguf_name(n) and n != "lm_head.weight"])  # every layer came back
    # the tokenizer travels: same ids, and the run's system prompt in the chat template
    tok = AutoTokenizer.from_pretrained(out.parent, gguf_file=out.name)
    ref = AutoTokenizer.from_pretrained(merged)
    assert tok("Where is my card arriving?")["input_ids"] == ref("Where is my card arriving?")["input_ids"]


def test_rope_base_travels_from_either_config_layout(run, tmp_path):
    import gguf

    from tunesmith.ops.gguf_export import write_gguf

    merged = tmp_path / "merged"
    assert runner.invoke(app, ["export", "--run", str(run.root), "--merge", str(merged)]).exit_code == 0
    config = json.loads((merged / "config.json").read_text())
    for layout in ({"rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}}, {"rope_theta": 50000.0}):
        clean = {k: v for k, v in config.items() if k not in ("rope_parameters", "rope_theta")}
        (merged / "config.json").write_text(json.dumps({**clean, **layout}))
        out = tmp_path / f"{len(layout)}-{id(layout)}.gguf"
        write_gguf(merged, out)
        field = gguf.GGUFReader(out).fields["llama.rope.freq_base"]
        want = layout.get("rope_theta") or layout["rope_parameters"]["rope_theta"]
        assert float(field.parts[field.data[0]][0]) == want


def test_rotary_permutation_matches_llama_cpps_and_transformers_undoes_it():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    w = np.arange(8 * 4 * 3, dtype=np.float32).reshape(8 * 4, 3)  # 8 heads of 4 rows
    assert not np.array_equal(permute_rotary(w, 8), w)
    assert np.array_equal(LlamaTensorProcessor(config={})._reverse_permute_weights(permute_rotary(w, 8), 8, 8), w)


def test_non_llama_models_are_refused_with_the_converter_to_use(tmp_path):
    from tunesmith.errors import UserError
    from tunesmith.ops.gguf_export import write_gguf

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(UserError, match="convert_hf_to_gguf.py"):
        write_gguf(tmp_path, tmp_path / "m.gguf")


def test_vllm_folder_holds_only_what_vllms_lora_loader_accepts(run, tmp_path):
    out = tmp_path / "vllm"
    res = runner.invoke(app, ["export", "--run", str(run.root), "--vllm", str(out), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    folder = out / "adapter"
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    config = json.loads((folder / "adapter_config.json").read_text())
    # what vLLM's LoRA loader (PEFTHelper) checks: a LoRA of rank within --max-lora-rank, no bias, no DoRA, no
    # fully trained modules; and every weight on a projection its Llama model packs LoRA for
    known = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert config["peft_type"] == "LORA" and config.get("bias", "none") == "none" and config["r"] <= 8
    assert not config.get("modules_to_save") and not config.get("use_dora")
    assert {m.split(".")[-1] for m in config["target_modules"]} <= known
    from safetensors.torch import load_file

    names = load_file(str(folder / "adapter_model.safetensors"))
    assert names and all((".lora_A." in n or ".lora_B." in n) and n.split(".lora_")[0].split(".")[-1] in known
                         for n in names)
    script = (out / "serve.sh").read_text()
    assert f"--lora-modules {run.id}=" in script and "--enable-lora" in script and "--max-lora-rank 8" in script
    assert info["command"] in script
