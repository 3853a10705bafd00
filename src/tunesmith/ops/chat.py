"""Answering a prompt with a run's tuned model, rendered as training saw it."""

from __future__ import annotations

from tunesmith.config import Config
from tunesmith.data.encode import encode_prompt
from tunesmith.data.examples import Example
from tunesmith.data.prepare import Splits
from tunesmith.inference.generate import generate_batched
from tunesmith.models.adapters import load_adapter
from tunesmith.runs.folder import RunPaths
from tunesmith.steps.model import find_adapter, load_model


def chat_once(run: RunPaths, cfg: Config, splits: Splits, prompt: str, max_new_tokens: int | None = None) -> str:
    """Answer one prompt with the run's tuned model, rendered as training saw it.

    Raises:
        UserError: The run has no saved adapter.
    """
    source = find_adapter(str(run.root), cfg.project.runs_dir)
    lm = load_model(cfg)
    lm.model = load_adapter(lm.model, source)
    ids = encode_prompt(lm.tokenizer, Example(id="chat", prompt=prompt, target=""), splits.system_prompt, cfg.model.max_seq_len)
    return generate_batched(lm, [ids], max_new_tokens or cfg.eval.max_new_tokens, 1, label="chat")[0]
