"""Exporting a run's model: the adapter folded into the base weights as a plain model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunesmith.config import Config
from tunesmith.console import console
from tunesmith.errors import UserError
from tunesmith.models.adapters import load_adapter, merge_adapter, saved_method
from tunesmith.models.load import load_base_model
from tunesmith.runs.folder import RunPaths
from tunesmith.steps.data import base_path
from tunesmith.steps.model import find_adapter


def export_merged(run: RunPaths, cfg: Config, out: Path) -> dict[str, Any]:
    """Fold a run's trained adapter into the base weights and save a plain model folder (safetensors + tokenizer).

    The base is loaded in full precision, also for a QLoRA run, so the merged model needs no
    bitsandbytes; its greedy outputs match the adapter model's (a test checks it).

    Raises:
        UserError: ``out`` is not empty, the run has no adapter, or its method cannot be merged.
    """
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty; choose a new folder for the merged model")
    source = find_adapter(str(run.root), cfg.project.runs_dir)
    method = saved_method(source)
    lm = load_base_model(base_path(cfg), "fp32", cfg.model.trust_remote_code)
    with console.status(f"Merging the {method} adapter of run {run.id}"):
        merged = merge_adapter(load_adapter(lm.model, source), method)
        out.mkdir(parents=True, exist_ok=True)
        merged.save_pretrained(out, safe_serialization=True)
        lm.tokenizer.save_pretrained(out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"run": run.id, "method": method, "out": str(out), "bytes": size}
