"""Exporting a run's model: the adapter folded into the base weights as a plain model folder, or the
adapter alone as a portable PEFT folder. Both carry the run's system prompt in the chat template,
a greedy generation config and a model card."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from transformers import GenerationConfig

from tunesmith.config import Config
from tunesmith.console import console
from tunesmith.errors import UserError
from tunesmith.models.adapters import load_adapter, merge_adapter, saved_method
from tunesmith.models.load import load_base_model, load_tokenizer
from tunesmith.models.resolve import EMBEDDED_MODELS
from tunesmith.data.prepare import Splits
from tunesmith.report.schema import RunReport, read_report_if_any
from tunesmith.runs.folder import RunPaths
from tunesmith.steps.data import base_path
from tunesmith.steps.model import find_adapter


def with_system_prompt(template: str, system_prompt: str) -> str:
    """A chat template that puts ``system_prompt`` first whenever the conversation brings no system message.

    The run trained and evaluated every prompt with its system message (for classification, the
    label list); baked into the exported template, plain ``apply_chat_template`` on the user's
    message renders the very text the run evaluated.
    """
    literal = json.dumps(system_prompt)  # a JSON string is a valid Jinja string literal
    return ("{%- if not messages or messages[0]['role'] != 'system' %}"
            f"{{%- set messages = [{{'role': 'system', 'content': {literal}}}] + messages %}}"
            "{%- endif %}" + template)


def portable_base(base: str) -> tuple[str, str | None]:
    """What an exported adapter names as its base, and a note when that is not exactly the trained base.

    The embedded model names the Hugging Face model its GGUF file was made from (the adapter was
    trained on the GGUF's dequantised 4-bit weights, so outputs on the original weights are close,
    not identical); a hub id or a local folder is kept as the project file gave it, never a path in
    tunesmith's cache.
    """
    embedded = EMBEDDED_MODELS.get(base)
    if embedded is None or embedded.hub_id is None:
        return base, None
    return embedded.hub_id, (f"Trained on tunesmith's embedded `{base}`: the weights of `{embedded.hub_id}` as "
                             f"quantised to 4 bits in `{embedded.gguf_file}` (package `{embedded.distribution}`) "
                             f"and dequantised. On the original `{embedded.hub_id}` weights the adapter's outputs are "
                             "close to the run's but not identical; `tunesmith export --merge` gives the exact model.")


def model_card(report: RunReport | None, run: RunPaths, cfg: Config, method: str, system_prompt: str | None,
               labels: list[str] | None, adapter_only: bool = False) -> str:
    """The exported folder's README.md: what the model is for, how it was made and how well it did."""
    base, note = portable_base(cfg.model.base)
    kind = "adapter" if adapter_only else "model"
    how = (f"a {method} adapter for `{base}` (load it with `peft.PeftModel.from_pretrained(base_model, this_folder)`)"
           if adapter_only else f"`{cfg.model.base}` tuned with {method}, the adapter merged into the weights")
    lines = [f"# {cfg.project.name}: {cfg.objective.task} {kind} from tunesmith run {run.id}", "", f"This is {how}.", ""]
    if adapter_only and note:
        lines += [note, ""]
    if cfg.adapter.head == "classify":
        lines += ["A classification head over the labels reads the last token of the prompt: load it with "
                  "`AutoModelForSequenceClassification`" + (" (with the adapter: `PeftModel.from_pretrained`)" if adapter_only
                                                             else "") + "; `config.id2label` names the labels, and the "
                  "softmax of the logits gives each label's probability.", ""]
    if system_prompt:
        lines += ["The chat template puts the run's system prompt first when a conversation has none, so",
                  "`tokenizer.apply_chat_template([{'role': 'user', 'content': ...}], add_generation_prompt=True)`",
                  "gives the prompt the run evaluated. The system prompt:", "", "```", system_prompt, "```", ""]
    if labels:
        lines += [f"Labels ({len(labels)}): " + ", ".join(f"`{label}`" for label in labels) + ".", ""]
    if report is not None:
        m = report.objective.metric
        iv = report.interval
        lines += [f"Verdict: **{report.verdict}** ({report.verdict_reason}).", "",
                  "| metric (test split) | untuned base | tuned |", "|---|---|---|"]
        for name, c in report.comparison.items():
            base = "–" if c.baseline is None else f"{c.baseline:.4f}"
            lines.append(f"| {name}{' (primary)' if name == m else ''} | {base} | {c.tuned:.4f} |")
        if iv is not None:
            lines += ["", f"Tuned {m}: {iv.value:.4f}, {round(iv.level * 100)}% interval {iv.span()} "
                          f"over {report.data.test} test examples."]
        lines += ["", f"Data: {report.data.train} training, {report.data.validation} validation and {report.data.test} "
                      f"test examples (format `{report.data.format}`), data hash `{report.data.data_hash}`."]
    lines += ["", "Greedy decoding (`generation_config.json`), as the run evaluated it.", ""]
    return "\n".join(lines)


def _prepare_tokenizer(tokenizer: Any, system_prompt: str | None) -> Any:
    if system_prompt and tokenizer.chat_template:
        tokenizer.chat_template = with_system_prompt(tokenizer.chat_template, system_prompt)
    return tokenizer


def _greedy(generation_config: Any, cfg: Config) -> Any:
    generation_config.update(do_sample=False, max_new_tokens=cfg.eval.max_new_tokens, temperature=None, top_p=None,
                             top_k=None)
    return generation_config


def _check_empty(out: Path, what: str) -> None:
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty; choose a new folder for the {what}")


def export_merged(run: RunPaths, cfg: Config, out: Path) -> dict[str, Any]:
    """Fold a run's trained adapter into the base weights and save a plain model folder.

    The folder holds the weights (safetensors), the tokenizer with the run's system prompt baked
    into its chat template, a generation config for greedy decoding with the run's answer length,
    and a model card (README.md) with the task, labels, data hash, metrics with intervals and the
    verdict. Loaded with plain transformers, its chat template and greedy decoding reproduce the
    run's test predictions (a test checks it). The base is loaded in full precision, also for a
    QLoRA run, so the merged model needs no bitsandbytes.

    Raises:
        UserError: ``out`` is not empty, the run has no adapter, or its method cannot be merged.
    """
    _check_empty(out, "merged model")
    source = find_adapter(str(run.root), cfg.project.runs_dir)
    method = saved_method(source)
    splits = Splits.load(run.data)
    head = splits.labels if cfg.adapter.head == "classify" else None
    lm = load_base_model(base_path(cfg), "fp32", cfg.model.trust_remote_code, labels=head)
    with console.status(f"Merging the {method} adapter of run {run.id}"):
        merged = merge_adapter(load_adapter(lm.model, source), method)
        out.mkdir(parents=True, exist_ok=True)
        if getattr(merged, "generation_config", None) is not None and head is None:
            _greedy(merged.generation_config, cfg)
        merged.save_pretrained(out, safe_serialization=True)
        _prepare_tokenizer(lm.tokenizer, splits.system_prompt).save_pretrained(out)
    (out / "README.md").write_text(model_card(read_report_if_any(run.report_json), run, cfg, method,
                                              splits.system_prompt, splits.labels), encoding="utf-8")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"run": run.id, "method": method, "out": str(out), "bytes": size,
            "system_prompt_in_chat_template": bool(splits.system_prompt)}


def export_adapter(run: RunPaths, cfg: Config, out: Path) -> dict[str, Any]:
    """Write a run's adapter as a portable PEFT folder to give to others.

    Next to the adapter weights: ``adapter_config.json`` naming the base as a loader outside this
    machine finds it (:func:`portable_base`: a hub id or the project's own ``model.base``, never a
    path in tunesmith's cache), the tokenizer with the run's system prompt in its chat template, a
    greedy ``generation_config.json`` and the model card.

    Raises:
        UserError: ``out`` is not empty, or the run has no adapter.
    """
    _check_empty(out, "adapter")
    source = find_adapter(str(run.root), cfg.project.runs_dir)
    method = saved_method(source)
    splits = Splits.load(run.data)
    base, note = portable_base(cfg.model.base)
    out.mkdir(parents=True, exist_ok=True)
    for file in source.iterdir():
        if file.is_file() and (file.suffix == ".safetensors" or file.name == "adapter_config.json"):
            shutil.copy2(file, out / file.name)
    config_path = out / "adapter_config.json"
    adapter_config = json.loads(config_path.read_text(encoding="utf-8"))
    adapter_config["base_model_name_or_path"] = base
    config_path.write_text(json.dumps(adapter_config, indent=2), encoding="utf-8")
    tokenizer = load_tokenizer(base_path(cfg), cfg.model.trust_remote_code)
    _prepare_tokenizer(tokenizer, splits.system_prompt).save_pretrained(out)
    _greedy(GenerationConfig.from_pretrained(base_path(cfg)) if (base_path(cfg) / "generation_config.json").is_file()
            else GenerationConfig(), cfg).save_pretrained(out)
    (out / "README.md").write_text(model_card(read_report_if_any(run.report_json), run, cfg, method,
                                              splits.system_prompt, splits.labels, adapter_only=True), encoding="utf-8")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"run": run.id, "method": method, "out": str(out), "bytes": size, "base": base, "base_note": note,
            "system_prompt_in_chat_template": bool(splits.system_prompt)}


def export_gguf(run: RunPaths, cfg: Config, out: Path, quant: str = "f16") -> dict[str, Any]:
    """The run's merged model as one GGUF file for llama.cpp, with an Ollama ``Modelfile`` beside it.

    Raises:
        UserError: ``out`` exists, the run cannot be merged, or the model is not Llama-family.
    """
    from tunesmith.ops.gguf_export import modelfile, write_gguf

    if out.exists():
        raise UserError(f"{out} exists; choose a new file for the GGUF model")
    if out.suffix != ".gguf":
        raise UserError(f"{out}: a GGUF file's name ends in .gguf")
    if cfg.adapter.head == "classify":
        raise UserError("a classification-head run has no language-model head for llama.cpp; use --merge")
    with tempfile.TemporaryDirectory(prefix="tunesmith-merge-") as tmp:
        merged = export_merged(run, cfg, Path(tmp) / "merged")
        result = write_gguf(Path(merged["out"]), out, quant, name=f"{cfg.project.name}-{run.id}")
        splits = Splits.load(run.data)
        tok = load_tokenizer(Path(merged["out"]))
    (out.parent / "Modelfile").write_text(modelfile(out.name, splits.system_prompt, tok.eos_token), encoding="utf-8")
    return {"run": run.id, **result, "modelfile": str(out.parent / "Modelfile")}


#: The files vLLM's LoRA loader reads from an adapter folder.
VLLM_FILES = ("adapter_config.json", "adapter_model.safetensors")


def export_vllm(run: RunPaths, cfg: Config, out: Path) -> dict[str, Any]:
    """The run's adapter in the layout vLLM loads (``--enable-lora``), with a ``serve.sh`` that serves it.

    The folder holds only what vLLM's LoRA loader accepts: ``adapter_config.json`` (base named by
    hub id) and ``adapter_model.safetensors``; ``serve.sh`` has the exact ``vllm serve`` command.

    Raises:
        UserError: ``out`` is not empty, or the adapter is not a LoRA vLLM can load.
    """
    _check_empty(out, "vLLM adapter")
    source = find_adapter(str(run.root), cfg.project.runs_dir)
    adapter_config = json.loads((source / "adapter_config.json").read_text()) if (source / "adapter_config.json").is_file() else {}
    if adapter_config.get("peft_type") != "LORA" or adapter_config.get("use_dora") or cfg.adapter.head == "classify":
        raise UserError(f"vLLM serves LoRA adapters of language models; run {run.id} has a {saved_method(source)} "
                        f"adapter{' with a classification head' if cfg.adapter.head == 'classify' else ''}: "
                        "use `tunesmith export --merge` and serve the merged folder")
    if adapter_config.get("modules_to_save"):
        raise UserError(f"run {run.id}'s adapter also trains {adapter_config['modules_to_save']} in full, which vLLM's "
                        "LoRA loader refuses; use `tunesmith export --merge`")
    base, note = portable_base(cfg.model.base)
    folder = out / "adapter"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / "adapter_model.safetensors", folder / "adapter_model.safetensors")
    adapter_config["base_model_name_or_path"] = base
    (folder / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2), encoding="utf-8")
    rank = int(adapter_config.get("r", 8))
    rank = next((r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= rank), rank)  # the values vLLM accepts
    command = f'vllm serve {base} --enable-lora --lora-modules {run.id}="$HERE/adapter" --max-lora-rank {rank} --max-loras 4'
    script = out / "serve.sh"
    script.write_text(f"#!/usr/bin/env bash\n# Serve the adapter of run {run.id} with vLLM on a GPU (pip install vllm); clients "
                      f"ask for model '{run.id}',\n# or for '{base}' without the adapter. More flags go after the command.\n"
                      f'set -euo pipefail\nHERE="$(cd "$(dirname "$0")" && pwd)"\nexec {command} "$@"\n', encoding="utf-8")
    script.chmod(0o755)
    return {"run": run.id, "out": str(out), "adapter": str(folder), "files": sorted(p.name for p in folder.iterdir()),
            "base": base, "base_note": note, "serve_sh": str(script), "command": command}
