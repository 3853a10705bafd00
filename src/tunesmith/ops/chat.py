"""Answering a prompt with a run's tuned model, rendered as training saw it."""

from __future__ import annotations

from tunesmith.config import Config
from tunesmith.data.encode import encode_prompt
from tunesmith.data.examples import Example
from tunesmith.data.prepare import Splits
from tunesmith.inference.generate import generate_batched
from tunesmith.inference.classify import classify_batched
from tunesmith.models.load import is_classifier
from tunesmith.runs.folder import RunPaths
from tunesmith.steps.model import load_tuned


def chat_once(run: RunPaths, cfg: Config, splits: Splits, prompt: str, max_new_tokens: int | None = None) -> str:
    """Answer one prompt with the run's tuned model, rendered as training saw it.

    Raises:
        UserError: The run has no saved adapter.
    """
    lm = load_tuned(cfg, run, splits.labels)
    ids = encode_prompt(lm.tokenizer, Example(id="chat", prompt=prompt, target=""), splits.system_prompt, cfg.model.max_seq_len)
    if is_classifier(lm.model):  # a head answers with the most probable label
        probs = classify_batched(lm, [ids], 1, label="chat")[0]
        return (splits.labels or [])[max(range(len(probs)), key=probs.__getitem__)]
    return generate_batched(lm, [ids], max_new_tokens or cfg.eval.max_new_tokens, 1, label="chat")[0]
