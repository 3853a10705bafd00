"""Evaluate one model on the test split: generate, score, and keep every prediction."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tunesmith.config import EvalConfig
from tunesmith.data.encode import encode_example, encode_prompt, head_prompt
from tunesmith.data.examples import Example
from tunesmith.inference.classify import classify_batched, most_probable
from tunesmith.inference.constrained import answers_within_labels, label_trie
from tunesmith.inference.generate import generate_batched
from tunesmith.evaluate.metrics import METRICS, compute_metrics
from tunesmith.evaluate.normalize import match_label
from tunesmith.evaluate.per_task import metrics_by_task, scoring
from tunesmith.tasks import get_task
from tunesmith.models.load import LoadedModel
from tunesmith.train.loss import evaluate_loss

#: The per-example score shown next to each prediction, by task.


@dataclass
class EvalResult:
    """Metrics and predictions of one model on one split.

    Attributes:
        name: ``baseline`` or ``tuned``.
        metrics: Metric name -> value, ``loss`` and ``perplexity`` included.
        predictions: One row per example: id, input, reference, label, meta, output, prediction, score,
            and the task type it was scored as.
        seconds: Wall time of the evaluation.
        by_task: In a ``data.mix`` run, each task tag's own metrics on its rows; else empty.
    """

    name: str
    metrics: dict[str, float]
    predictions: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    by_task: dict[str, dict[str, float]] = field(default_factory=dict)


def constrains(task: str, labels: Sequence[str] | None, tasks: dict[str, Any] | None, cfg: EvalConfig) -> bool:
    """Whether answers are decoded within the label set (``eval.constrained``; not for a data.mix run)."""
    return cfg.constrained != "off" and task == "classification" and bool(labels) and not tasks


def evaluate_model(lm: LoadedModel, examples: Sequence[Example], *, task: str, system_prompt: str | None,
                   labels: list[str] | None, cfg: EvalConfig, max_seq_len: int, name: str,
                   tasks: dict[str, dict[str, Any]] | None = None) -> EvalResult:
    """Generate greedily for every example and score the outputs with the task's metrics.

    Args:
        lm: The model to evaluate (base or with adapter).
        examples: The test examples.
        task: The objective's task.
        system_prompt: The task's system message.
        labels: The label set (classification).
        cfg: Evaluation settings.
        max_seq_len: Longest prompt in tokens.
        name: What is evaluated, for progress and the result.
        tasks: The tasks of a ``data.mix`` run (``Splits.tasks``): each example is then scored as
            its own task's type, against its own task's labels (see :mod:`tunesmith.evaluate.per_task`).

    Returns:
        The metrics and per-example predictions. With answers constrained to the labels
        (:func:`constrains`), each row's ``prediction`` is the constrained label, with its
        ``confidence`` and the free answer mapped onto the labels as ``unconstrained``.
    """
    start = time.perf_counter()
    examples = list(examples)[: cfg.max_examples] if cfg.max_examples else list(examples)
    prompts = [encode_prompt(lm.tokenizer, ex, system_prompt, max_seq_len) for ex in examples]
    answers = None
    if constrains(task, labels, tasks, cfg):
        trie = label_trie(lm.tokenizer, labels or [], system_prompt)
        outputs, answers = answers_within_labels(lm, prompts, trie, cfg.max_new_tokens, cfg.batch_size, label=f"eval {name}")
    else:
        outputs = generate_batched(lm, prompts, cfg.max_new_tokens, cfg.batch_size, label=f"eval {name}")
    kinds = [scoring(ex, task, labels, tasks) for ex in examples]
    free = [(match_label(o, labs or []) or "") if kind == "classification" else o for o, (kind, labs) in zip(outputs, kinds)]
    preds = list(free) if answers is None else [a.label for a in answers]
    refs: list[Any] = [ex.label if kind == "classification" else ex.target for ex, (kind, _) in zip(examples, kinds)]
    metrics = compute_metrics(task, preds, refs)
    encoded = [encode_example(lm.tokenizer, ex, system_prompt, max_seq_len) for ex in examples]
    loss = evaluate_loss(lm.model, encoded, lm.tokenizer.pad_token_id, cfg.batch_size, lm.device, lm.autocast)
    metrics["loss"] = loss
    metrics["perplexity"] = math.exp(min(loss, 50))
    rows = []
    for i, (ex, out, pred, ref, (kind, _)) in enumerate(zip(examples, outputs, preds, refs, kinds)):
        extra = {} if answers is None else {"confidence": answers[i].probability, "unconstrained": free[i]}
        rows.append({
            "id": ex.id,
            "input": ex.prompt,
            "reference": ex.target,
            "label": ex.label,
            "meta": ex.meta,
            "output": out,
            "prediction": pred,
            "score": METRICS[get_task(kind).example_score].fn([pred], [ref]),
            "task_type": kind,
            **extra,
        })
    return EvalResult(name, metrics, rows, round(time.perf_counter() - start, 2), metrics_by_task(rows, tasks or {}))


def evaluate_classifier(lm: LoadedModel, examples: Sequence[Example], *, labels: list[str], system_prompt: str | None,
                        cfg: EvalConfig, max_seq_len: int, name: str) -> EvalResult:
    """Evaluate a model with a classification head: one forward pass per batch, the most probable label.

    Rows are as :func:`evaluate_model` writes them (``output`` and ``prediction`` are the label), with
    ``confidence`` the chosen label's probability and ``probabilities`` every label's. ``loss`` is the
    cross-entropy of the reference labels (not comparable with a generative model's token loss, so
    no perplexity is given).
    """
    start = time.perf_counter()
    examples = list(examples)[: cfg.max_examples] if cfg.max_examples else list(examples)
    prompts = [head_prompt(lm.tokenizer, ex, system_prompt, max_seq_len)[0] for ex in examples]
    probs = classify_batched(lm, prompts, cfg.batch_size, label=f"eval {name}")
    preds = [most_probable(labels, p)[0] for p in probs]
    refs = [ex.label for ex in examples]
    metrics = compute_metrics("classification", preds, refs)
    index = {lab: i for i, lab in enumerate(labels)}
    metrics["loss"] = -sum(math.log(max(p[index[r]], 1e-12)) for p, r in zip(probs, refs) if r in index) / max(len(refs), 1)
    rows = []
    for ex, p, pred in zip(examples, probs, preds):
        rows.append({"id": ex.id, "input": ex.prompt, "reference": ex.target, "label": ex.label, "meta": ex.meta,
                     "output": pred, "prediction": pred, "score": float(pred == ex.label), "task_type": "classification",
                     "confidence": max(p), "probabilities": dict(zip(labels, (round(x, 6) for x in p)))})
    return EvalResult(name, metrics, rows, round(time.perf_counter() - start, 2))
