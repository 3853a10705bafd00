"""Forgetting: does fine-tuning damage general ability? Measured before and after on bundled sets.

Two small sets ship with tunesmith (``templates/general``, written for the project):

* 30 paragraphs of everyday general text, whose perplexity under the model is measured;
* 60 easy general multiple-choice questions with four short options each. Nothing is generated:
  each option's log-probability as the answer is computed, and the figure is the probability the
  model gives the right option, renormalised over the four (and how often the right option is the
  most likely one). A model that forgets general knowledge loses it; a model that learns to answer
  tersely does not gain it, as a token-overlap score of generated answers would.

Both are paired before/after comparisons on the same items: the change's interval and p-value come
from one permutation procedure (:func:`tunesmith.evaluate.stats.paired_shift`), and a warning needs
both a significant worsening and a relative change beyond the configured threshold.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from typing import Any

import numpy as np

from tunesmith.config import ForgettingConfig
from tunesmith.data.encode import encode_example
from tunesmith.data.examples import Example
from tunesmith.evaluate.stats import paired_shift
from tunesmith.inference.likelihood import completion_logprobs
from tunesmith.models.load import LoadedModel

SOURCE = "templates/general: written for tunesmith (see NOTICE.md there)"


def _rows(name: str) -> list[dict[str, Any]]:
    text = (resources.files("tunesmith") / "templates" / "general" / name).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def general_sets() -> tuple[list[Example], list[dict[str, Any]]]:
    """The bundled general text (plain, loss on every token) and the multiple-choice questions."""
    text = [Example(id=r["id"], prompt="", target=r["text"], plain=True) for r in _rows("general_text.jsonl")]
    return text, _rows("general_choice.jsonl")


def measure_general(lm: LoadedModel, *, max_seq_len: int, batch_size: int) -> dict[str, Any]:
    """Per-paragraph losses on the general text and per-question option log-probabilities.

    Returns:
        ``{"perplexity", "choice_probability", "choice_accuracy", "text": [{id, logprob, tokens}],
        "choice": [{id, question, options, answer, logprobs, probability, chosen}]}``.
    """
    text, questions = general_sets()
    scored = completion_logprobs(lm, [encode_example(lm.tokenizer, ex, None, max_seq_len) for ex in text], batch_size)
    options = [Example(id=f"{q['id']}/{k}", prompt=q["question"], target=opt)
               for q in questions for k, opt in enumerate(q["options"])]
    option_lp = completion_logprobs(lm, [encode_example(lm.tokenizer, ex, None, max_seq_len) for ex in options],
                                    batch_size)
    choice, at = [], 0
    for q in questions:
        lp = np.array([option_lp[at + k][0] for k in range(len(q["options"]))])
        at += len(q["options"])
        probs = np.exp(lp - lp.max())
        probs /= probs.sum()
        choice.append({"id": q["id"], "question": q["question"], "options": q["options"], "answer": q["answer"],
                       "logprobs": lp.round(4).tolist(), "probability": float(probs[q["answer"]]),
                       "chosen": int(lp.argmax())})
    total_lp, total_tokens = sum(lp for lp, _ in scored), sum(n for _, n in scored)
    return {"perplexity": math.exp(min(-total_lp / max(total_tokens, 1), 50)),
            "choice_probability": float(np.mean([c["probability"] for c in choice])),
            "choice_accuracy": float(np.mean([c["chosen"] == c["answer"] for c in choice])),
            "text": [{"id": ex.id, "logprob": lp, "tokens": n} for ex, (lp, n) in zip(text, scored)],
            "choice": choice}


def compare_general(before: dict[str, Any], after: dict[str, Any], cfg: ForgettingConfig, *, level: float = 0.95,
                    resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Before and after with paired intervals of the changes, and warnings past the configured thresholds.

    Args:
        before: :func:`measure_general` of the untuned model.
        after: The same for the tuned model.
        cfg: Thresholds.
        level: Confidence level of the intervals.
        resamples: Random sign patterns of the permutation test.
        seed: Their seed.

    Returns:
        ``perplexity`` and ``choice_probability`` entries (before, after, relative change with its
        interval, p), ``choice_accuracy`` (before, after, McNemar p), the per-question detail, and warnings.
    """
    opts = {"level": level, "resamples": resamples, "seed": seed}
    # Perplexity: the token-weighted mean change in log-loss is exactly log(after / before).
    tokens = np.array([t["tokens"] for t in before["text"]], float)
    loss_b = np.array([-t["logprob"] for t in before["text"]]) / np.maximum(tokens, 1)
    loss_a = np.array([-t["logprob"] for t in after["text"]]) / np.maximum(tokens, 1)
    ppl = paired_shift((loss_a - loss_b) * tokens / tokens.mean(), bound=20.0, **opts)
    perplexity = {"before": before["perplexity"], "after": after["perplexity"],
                  "change": math.expm1(ppl.diff.value), "low": math.expm1(ppl.diff.low),
                  "high": math.expm1(ppl.diff.high), "p_value": ppl.p_value, "test": ppl.test,
                  "items": len(tokens), "worse": "higher"}
    prob_b = np.array([c["probability"] for c in before["choice"]])
    prob_a = np.array([c["probability"] for c in after["choice"]])
    mc = paired_shift(prob_a - prob_b, bound=1.0, **opts)
    base = max(float(prob_b.mean()), 1e-9)
    probability = {"before": float(prob_b.mean()), "after": float(prob_a.mean()), "change": mc.diff.value / base,
                   "low": mc.diff.low / base, "high": mc.diff.high / base, "p_value": mc.p_value, "test": mc.test,
                   "items": len(prob_b), "worse": "lower"}
    right_b = np.array([c["chosen"] == c["answer"] for c in before["choice"]], float)
    right_a = np.array([c["chosen"] == c["answer"] for c in after["choice"]], float)
    acc = paired_shift(right_a - right_b, proportion=True, **opts)
    accuracy = {"before": float(right_b.mean()), "after": float(right_a.mean()), "change": acc.diff.value,
                "low": acc.diff.low, "high": acc.diff.high, "p_value": acc.p_value, "test": acc.test,
                "items": len(right_b), "worse": "lower"}
    alpha = round(1 - level, 12)
    warnings = []
    if perplexity["p_value"] < alpha and perplexity["change"] > cfg.max_perplexity_increase:
        warnings.append(f"perplexity on general text rose by {perplexity['change']:.1%} (interval "
                        f"{perplexity['low']:+.1%} to {perplexity['high']:+.1%}, p = {perplexity['p_value']:.3g}), more "
                        f"than the {cfg.max_perplexity_increase:.0%} allowed: the model may have lost general fluency")
    if probability["p_value"] < alpha and -probability["change"] > cfg.max_choice_drop:
        warnings.append(f"on the general multiple-choice questions the probability of the right answer fell by "
                        f"{-probability['change']:.1%} (interval {probability['low']:+.1%} to {probability['high']:+.1%}, "
                        f"p = {probability['p_value']:.3g}), more than the {cfg.max_choice_drop:.0%} allowed: the model "
                        "may have lost general knowledge")
    detail = [{"id": b["id"], "question": b["question"], "right": b["options"][b["answer"]],
               "probability_before": b["probability"], "probability_after": a["probability"],
               "chosen_before": b["options"][b["chosen"]], "chosen_after": a["options"][a["chosen"]]}
              for b, a in zip(before["choice"], after["choice"])]
    return {"perplexity": perplexity, "choice_probability": probability, "choice_accuracy": accuracy,
            "level": level, "thresholds": {"max_perplexity_increase": cfg.max_perplexity_increase,
                                           "max_choice_drop": cfg.max_choice_drop},
            "warnings": warnings, "choice": detail, "source": SOURCE}
