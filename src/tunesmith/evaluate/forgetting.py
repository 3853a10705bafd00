"""Forgetting: does fine-tuning damage general ability? Measured before and after on bundled sets.

Two small sets ship with tunesmith (``templates/general``, written for the project): 30
paragraphs of everyday general text, whose perplexity under the model is measured, and 12
simple general questions, answered greedily and scored by SQuAD token F1 against short
references. The report shows both before and after tuning and warns past a threshold.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from typing import Any

from tunesmith.config import ForgettingConfig
from tunesmith.data.encode import encode_example, encode_prompt
from tunesmith.data.examples import Example
from tunesmith.inference.generate import generate_batched
from tunesmith.evaluate.metrics import METRICS
from tunesmith.models.load import LoadedModel
from tunesmith.train.loss import evaluate_loss


def _rows(name: str) -> list[dict[str, str]]:
    text = (resources.files("tunesmith") / "templates" / "general" / name).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def general_sets() -> tuple[list[Example], list[Example]]:
    """The bundled general text (plain, loss on every token) and the instruction probe."""
    text = [Example(id=r["id"], prompt="", target=r["text"], plain=True) for r in _rows("general_text.jsonl")]
    probe = [Example(id=r["id"], prompt=r["prompt"], target=r["response"]) for r in _rows("instruction_probe.jsonl")]
    return text, probe


def measure_general(lm: LoadedModel, *, max_seq_len: int, batch_size: int, max_new_tokens: int) -> dict[str, Any]:
    """Perplexity on the general text and the probe's mean token F1, with the probe's answers.

    Returns:
        ``{"perplexity", "probe_f1", "probe": [{id, prompt, reference, answer, f1}]}``.
    """
    text, probe = general_sets()
    encoded = [encode_example(lm.tokenizer, ex, None, max_seq_len) for ex in text]
    loss = evaluate_loss(lm.model, encoded, lm.tokenizer.pad_token_id, batch_size, lm.device, lm.autocast)
    prompts = [encode_prompt(lm.tokenizer, ex, None, max_seq_len) for ex in probe]
    answers = generate_batched(lm, prompts, max_new_tokens, batch_size, label="general probe")
    f1 = METRICS["token_f1"].per_example
    assert f1 is not None
    scores = f1(answers, [ex.target for ex in probe])
    return {"perplexity": math.exp(min(loss, 50)), "probe_f1": sum(scores) / len(scores),
            "probe": [{"id": ex.id, "prompt": ex.prompt, "reference": ex.target, "answer": a, "f1": s}
                      for ex, a, s in zip(probe, answers, scores)]}


def compare_general(before: dict[str, Any], after: dict[str, Any], cfg: ForgettingConfig) -> dict[str, Any]:
    """Before and after, the changes, and warnings past the configured thresholds."""
    ppl_change = after["perplexity"] / before["perplexity"] - 1
    f1_change = after["probe_f1"] - before["probe_f1"]
    warnings = []
    if ppl_change > cfg.max_perplexity_increase:
        warnings.append(f"perplexity on general text rose by {ppl_change:.0%} (more than {cfg.max_perplexity_increase:.0%}): "
                        "the model may have lost general ability")
    if -f1_change > cfg.max_probe_drop:
        warnings.append(f"the general instruction probe's token F1 fell by {-f1_change:.2f} (more than {cfg.max_probe_drop:.2f})")
    return {"perplexity_before": before["perplexity"], "perplexity_after": after["perplexity"],
            "perplexity_change": ppl_change, "probe_f1_before": before["probe_f1"], "probe_f1_after": after["probe_f1"],
            "probe_f1_change": f1_change, "warnings": warnings,
            "probe": [{**b, "answer_after": a["answer"], "f1_after": a["f1"]} for b, a in zip(before["probe"], after["probe"])],
            "source": "templates/general: written for tunesmith (see NOTICE.md there)"}
