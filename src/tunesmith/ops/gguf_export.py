"""A merged model as one GGUF file for llama.cpp and Ollama, with an Ollama ``Modelfile``.

Written with the ``gguf`` package (llama.cpp's own Python writer) from the merged safetensors
folder, the way llama.cpp's ``convert_hf_to_gguf.py`` writes a Llama model: its tensor names, the
query and key rows permuted for GGML's rotary layout, norms in f32, the other matrices in the
chosen type, the hyperparameters, and the tokenizer (BPE tokens, merges, special ids, chat
template with the run's system prompt). Llama-family architectures only; others are refused with
the converter to use instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.errors import UserError

#: What ``--quant`` accepts -> the GGML type of the matrices.
QUANTS = ("f16", "q8_0", "q4_0")

#: Hugging Face names of a Llama layer's tensors -> GGUF's.
_LAYER = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
          "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
          "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
_TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight"}


def gguf_name(name: str) -> str | None:
    """The GGUF tensor name of a Hugging Face Llama tensor, None for one llama.cpp does not read."""
    if name in _TOP:
        return _TOP[name]
    parts = name.split(".")
    if len(parts) == 6 and parts[:2] == ["model", "layers"] and parts[-1] == "weight":
        short = _LAYER.get(".".join(parts[3:5]))
        return None if short is None else f"blk.{parts[2]}.{short}.weight"
    if len(parts) == 5 and parts[:2] == ["model", "layers"] and parts[-1] == "weight":
        short = _LAYER.get(parts[3])
        return None if short is None else f"blk.{parts[2]}.{short}.weight"
    return None


def permute_rotary(w: np.ndarray, heads: int) -> np.ndarray:
    """Reorder the rows of a query or key projection from Hugging Face's rotary layout to GGML's
    (as ``convert_hf_to_gguf.py`` does; transformers' GGUF loader undoes it)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tokenizer_metadata(writer: Any, folder: Path, pre: str) -> None:
    import gguf

    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    model = data.get("model", {})
    if model.get("type") != "BPE":
        raise UserError(f"the tokenizer is {model.get('type')}, not BPE: convert this model with llama.cpp's "
                        "convert_hf_to_gguf.py")
    vocab: dict[str, int] = dict(model["vocab"])
    added = {t["content"]: t for t in data.get("added_tokens", [])}
    for content, t in added.items():
        vocab[content] = t["id"]
    size = max(vocab.values()) + 1
    tokens, types = [f"[PAD{i}]" for i in range(size)], [gguf.TokenType.UNUSED] * size
    for text, i in vocab.items():
        tokens[i] = text
        t = added.get(text)
        types[i] = gguf.TokenType.NORMAL if t is None else (gguf.TokenType.CONTROL if t.get("special")
                                                            else gguf.TokenType.USER_DEFINED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    for key, add in (("bos_token", writer.add_bos_token_id), ("eos_token", writer.add_eos_token_id),
                     ("pad_token", writer.add_pad_token_id), ("unk_token", writer.add_unk_token_id)):
        value = config.get(key)
        value = value.get("content") if isinstance(value, dict) else value
        if value in vocab:
            add(vocab[value])
    writer.add_add_bos_token(bool(config.get("add_bos_token", False)))
    template = config.get("chat_template")
    if template is None and (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if template:
        writer.add_chat_template(template)


def known_pre_tokenizer(folder: Path) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenisation: that of an embedded model whose GGUF has the same
    vocabulary (SmolLM2's ``smollm``), else ``default``."""
    import gguf

    from tunesmith.models.embedded import gguf_path
    from tunesmith.models.resolve import EMBEDDED_MODELS

    ours = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    for model in EMBEDDED_MODELS.values():
        try:
            source = gguf.GGUFReader(gguf_path(model))
        except Exception:  # noqa: BLE001 - not installed here: try the next
            continue
        tokens, pre = source.fields.get("tokenizer.ggml.tokens"), source.fields.get("tokenizer.ggml.pre")
        if tokens is None or pre is None or len(tokens.data) != len(ours):
            continue
        sample = [bytes(tokens.parts[tokens.data[i]]).decode("utf-8") for i in range(0, len(tokens.data), 997)]
        if all(ours.get(text) == i * 997 for i, text in enumerate(sample)):
            return bytes(pre.parts[pre.data[0]]).decode("utf-8")
    return "default"


def write_gguf(folder: Path, out: Path, quant: str = "f16", name: str = "tunesmith") -> dict[str, Any]:
    """Write the model in ``folder`` (a merged export) as the GGUF file ``out``.

    Raises:
        UserError: Not a Llama-family model, an unknown ``quant``, or a tokenizer GGUF cannot hold.
    """
    import gguf
    from safetensors.numpy import load_file

    if quant not in QUANTS:
        raise UserError(f"--quant {quant}: one of {', '.join(QUANTS)}")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    arch = (config.get("architectures") or ["?"])[0]
    if config.get("model_type") != "llama" or arch != "LlamaForCausalLM":
        raise UserError(f"GGUF export writes Llama-family models; this one is {arch} ({config.get('model_type')}). "
                        "Export it with `tunesmith export --merge DIR` and convert DIR with llama.cpp's "
                        "convert_hf_to_gguf.py, which knows every architecture")
    rope = config.get("rope_parameters") or {}  # transformers 5 keeps rope_theta here, 4.x at the top level
    if config.get("rope_scaling") or rope.get("rope_type", "default") != "default":
        raise UserError("the model uses rope scaling, which this writer does not carry: use llama.cpp's "
                        "convert_hf_to_gguf.py on the `export --merge` folder")
    rope_theta = float(rope.get("rope_theta", config.get("rope_theta", 10000.0)))
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    hidden = config["hidden_size"]
    head_dim = config.get("head_dim") or hidden // heads
    matrix_type = {"f16": gguf.GGMLQuantizationType.F16, "q8_0": gguf.GGMLQuantizationType.Q8_0,
                   "q4_0": gguf.GGMLQuantizationType.Q4_0}[quant]
    file_type = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
                 "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[quant]

    tensors: dict[str, np.ndarray] = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name(name)
    writer.add_context_length(config.get("max_position_embeddings", 2048))
    writer.add_embedding_length(hidden)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_rope_dimension_count(head_dim)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-5))
    writer.add_rope_freq_base(rope_theta)
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _tokenizer_metadata(writer, folder, known_pre_tokenizer(folder))

    written, types = 0, {}
    tied = config.get("tie_word_embeddings", False)
    for hf_name in sorted(tensors):
        target = gguf_name(hf_name)
        if target is None or (tied and target == "output.weight"):
            continue
        data = tensors[hf_name].astype(np.float32)
        if target.endswith("attn_q.weight"):
            data = permute_rotary(data, heads)
        elif target.endswith("attn_k.weight"):
            data = permute_rotary(data, kv_heads)
        if data.ndim == 1:
            qtype = gguf.GGMLQuantizationType.F32
        elif target in ("token_embd.weight", "output.weight"):
            # the embedding is also the output head of a tied model: quantising it moved near-tie answers
            # (q8_0 agreed with the merged model on 46 of 50 banking77 prompts with it quantised)
            qtype = gguf.GGMLQuantizationType.F16
        elif matrix_type != gguf.GGMLQuantizationType.F16 and data.shape[-1] % 32 == 0:
            qtype = matrix_type
        else:
            qtype = gguf.GGMLQuantizationType.F16
        stored = data if qtype == gguf.GGMLQuantizationType.F32 else (
            data.astype(np.float16) if qtype == gguf.GGMLQuantizationType.F16 else gguf.quants.quantize(data, qtype))
        writer.add_tensor(target, stored, raw_dtype=qtype)
        types[qtype.name] = types.get(qtype.name, 0) + 1
        written += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"gguf": str(out), "quant": quant, "tensors": written, "types": types, "bytes": out.stat().st_size}


def modelfile(gguf_file: str, system_prompt: str | None, stop: str | None) -> str:
    """An Ollama ``Modelfile``: the GGUF, the ChatML template, the run's system prompt, greedy decoding."""
    lines = [f"FROM ./{gguf_file}",
             'TEMPLATE """{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
             '{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"""']
    if system_prompt:
        lines.append('SYSTEM """' + system_prompt.replace('"""', '\\"\\"\\"') + '"""')
    lines.append("PARAMETER temperature 0")
    if stop:
        lines.append(f'PARAMETER stop "{stop}"')
    return "\n".join(lines) + "\n"
