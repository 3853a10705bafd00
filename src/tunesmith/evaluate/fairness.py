"""Fairness: the metric per group of a sensitive attribute, the disparate-impact ratio, and counterfactual probes.

The disparate-impact ratio here is the lowest group's metric over the highest group's (every
registered metric is higher-is-better), flagged below 0.8 after the "four-fifths rule". Counterfactual
probes swap demographic terms in the test prompts (he/she, his/her, ... as configured), ask the
model again, and count how often its answer changes.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from tunesmith.data.encode import encode_prompt
from tunesmith.data.examples import Example
from tunesmith.evaluate.analysis import references
from tunesmith.inference.generate import generate_batched
from tunesmith.evaluate.metrics import METRICS
from tunesmith.evaluate.normalize import match_label
from tunesmith.evaluate.stats import MIN_TEST_EXAMPLES, metric_interval
from tunesmith.models.load import LoadedModel


def group_metrics(rows: Sequence[dict[str, Any]], attribute: str, metric: str, task: str,
                  min_ratio: float = 0.8, min_count: int = MIN_TEST_EXAMPLES) -> dict[str, Any]:
    """The metric for each value of ``attribute`` (a metadata column), with intervals, and the disparate-impact ratio.

    The ratio is flagged only when both groups it compares hold at least ``min_count`` examples: a
    group of a handful of rows makes any ratio (``too_small`` says so).

    Returns:
        ``{"attribute", "metric", "groups": [{value, count, metric, low, high, method}], "ratio", "flagged",
        "too_small", "missing"}``; rows without the attribute are counted in ``missing``.
    """
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    missing = 0
    for r in rows:
        value = (r.get("meta") or {}).get(attribute)
        if value is None:
            missing += 1
        else:
            groups[str(value)].append(r)
    fn = METRICS[metric].fn
    table = []
    for v, g in sorted(groups.items()):
        iv = metric_interval(metric, [r["prediction"] for r in g], references(g, task), min_count=min_count)
        table.append({"value": v, "count": len(g), "metric": fn([r["prediction"] for r in g], references(g, task)),
                      "low": iv.low, "high": iv.high, "method": iv.method})
    ratio, too_small = None, False
    if len(table) >= 2:  # every registered metric is higher-is-better; equal zeros count as parity
        worst, best = min(table, key=lambda g: g["metric"]), max(table, key=lambda g: g["metric"])
        ratio = worst["metric"] / best["metric"] if best["metric"] > 0 else 1.0
        too_small = min(worst["count"], best["count"]) < min_count
    return {"attribute": attribute, "metric": metric, "groups": table, "ratio": ratio,
            "flagged": ratio is not None and ratio < min_ratio and not too_small, "too_small": too_small,
            "min_ratio": min_ratio, "min_count": min_count, "missing": missing}


def swap_terms(text: str, swaps: Sequence[Sequence[str]]) -> str:
    """Swap each pair of terms both ways, as whole words, keeping the first letter's case.

    A term that appears in several pairs (``her`` in his/her and him/her) takes its last pair.
    """
    mapping = {}
    for a, b in swaps:
        mapping[a.lower()], mapping[b.lower()] = b.lower(), a.lower()
    if not mapping:
        return text
    pattern = re.compile(r"\b(" + "|".join(re.escape(k) for k in sorted(mapping, key=len, reverse=True)) + r")\b", re.I)

    def repl(m: re.Match[str]) -> str:
        word = mapping[m.group(0).lower()]
        return word[:1].upper() + word[1:] if m.group(0)[:1].isupper() else word

    return pattern.sub(repl, text)


def counterfactual_probe(lm: LoadedModel, examples: Sequence[Example], tuned_rows: Sequence[dict[str, Any]], *,
                         swaps: Sequence[Sequence[str]], task: str, system_prompt: str | None, labels: list[str] | None,
                         max_seq_len: int, max_new_tokens: int, batch_size: int, show: int = 5) -> dict[str, Any]:
    """Ask the model again with demographic terms swapped and count the answers that change.

    Args:
        lm: The tuned model.
        examples: The test examples, in the order of ``tuned_rows``.
        tuned_rows: The tuned model's predictions on the originals.
        swaps: Pairs of terms to swap.
        task: The task (classification answers are compared as labels).
        system_prompt: The task's system message.
        labels: The label set.
        max_seq_len: Longest prompt.
        max_new_tokens: Longest answer.
        batch_size: Prompts per batch.
        show: How many changed examples to keep for the report.

    Returns:
        ``{"swaps", "probed", "changed", "rate", "examples"}``.
    """
    probes = [(i, swap_terms(ex.prompt, swaps)) for i, ex in enumerate(examples)]
    probes = [(i, text) for i, text in probes if text != examples[i].prompt]
    if not probes:
        return {"swaps": [list(s) for s in swaps], "probed": 0, "changed": 0, "rate": None, "examples": []}
    prompts = [encode_prompt(lm.tokenizer, Example(id=examples[i].id, prompt=text, target=examples[i].target,
                                                   system=examples[i].system), system_prompt, max_seq_len)
               for i, text in probes]
    outputs = generate_batched(lm, prompts, max_new_tokens, batch_size, label="counterfactual")
    changed = []
    for (i, text), out in zip(probes, outputs):
        pred = (match_label(out, labels or []) or "") if task == "classification" else out
        if pred != tuned_rows[i]["prediction"]:
            changed.append({"id": examples[i].id, "input": examples[i].prompt, "swapped": text,
                            "answer": tuned_rows[i]["prediction"], "swapped_answer": pred})
    return {"swaps": [list(s) for s in swaps], "probed": len(probes), "changed": len(changed),
            "rate": len(changed) / len(probes), "examples": changed[:show]}
