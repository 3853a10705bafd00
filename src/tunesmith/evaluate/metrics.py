"""Task metrics, one registry entry each.

A metric takes the predictions and references (strings; a reference may be a list of
acceptable strings) and returns a number. Adding one means one :func:`register_metric`
here and one test row.
"""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import sacrebleu
from rouge_score import rouge_scorer
from sklearn.metrics import f1_score, precision_score, recall_score

from tunesmith.errors import ConfigError
from tunesmith.tasks import get_task
from tunesmith.evaluate.normalize import squad_normalize

Reference = str | Sequence[str]


@dataclass(frozen=True)
class Metric:
    """A registered metric.

    Attributes:
        name: Registry key.
        fn: ``fn(predictions, references) -> float``.
        higher_is_better: Direction of improvement.
        scale: ``1`` for fractions in [0, 1], ``100`` for scores in [0, 100].
        per_example: For metrics that are a mean of per-example scores, those scores (bootstrap
            resampling then needs no recomputation); None for corpus metrics.
        stats: For corpus metrics, per-example sufficient statistics (an ``n x k`` array whose
            column sums determine the score), so resamples are sums instead of recomputations.
        from_stats: The score from summed statistics.
        binary: Every per-example score is 0 or 1 (the metric is a proportion), so exact binomial
            methods apply.
    """

    name: str
    fn: Callable[[Sequence[str], Sequence[Reference]], float]
    higher_is_better: bool = True
    scale: float = 1.0
    per_example: Callable[[Sequence[str], Sequence[Reference]], list[float]] | None = None
    stats: Callable[[Sequence[str], Sequence[Reference]], np.ndarray] | None = None
    from_stats: Callable[[np.ndarray], float] | None = None
    binary: bool = False


METRICS: dict[str, Metric] = {}


def register_metric(name: str, higher_is_better: bool = True, scale: float = 1.0,
                    stats: Callable[[Sequence[str], Sequence[Reference]], np.ndarray] | None = None,
                    from_stats: Callable[[np.ndarray], float] | None = None):
    """Decorator that registers a metric function (optionally with its sufficient statistics).

    Raises:
        ValueError: The name is taken.
    """

    def deco(fn: Callable[[Sequence[str], Sequence[Reference]], float]):
        if name in METRICS:
            raise ValueError(f"metric {name!r} is already registered")
        METRICS[name] = Metric(name, fn, higher_is_better, scale, None, stats, from_stats)
        return fn

    return deco


def register_example_metric(name: str, higher_is_better: bool = True, binary: bool = False):
    """Decorator that registers a metric defined per example; the metric is their mean.

    Args:
        name: Registry key.
        higher_is_better: Direction of improvement.
        binary: Every per-example score is 0 or 1 (the metric is a proportion).

    Raises:
        ValueError: The name is taken.
    """

    def deco(one: Callable[[str, Reference], float]):
        def per_example(preds: Sequence[str], refs: Sequence[Reference]) -> list[float]:
            return [one(p, r) for p, r in zip(preds, refs)]

        def fn(preds: Sequence[str], refs: Sequence[Reference]) -> float:
            scores = per_example(preds, refs)
            return sum(scores) / len(scores) if scores else 0.0

        fn.__doc__ = f"Mean over examples: {one.__doc__}"
        if name in METRICS:
            raise ValueError(f"metric {name!r} is already registered")
        METRICS[name] = Metric(name, fn, higher_is_better, 1.0, per_example, binary=binary)
        return one

    return deco


def _refs(ref: Reference) -> list[str]:
    return [ref] if isinstance(ref, str) else list(ref)


# ---- classification (predictions are already mapped to labels, "" when none matched)


@register_example_metric("accuracy", binary=True)
def accuracy(pred: str, ref: Reference) -> float:
    """1 when the prediction is the reference label (or one of them), else 0."""
    return float(pred in _refs(ref))


def _labelled(kind: str, average: str) -> Callable[[Sequence[str], Sequence[Reference]], float]:
    score = {"precision": precision_score, "recall": recall_score, "f1": f1_score}[kind]

    def fn(preds: Sequence[str], refs: Sequence[Reference]) -> float:
        y_true = [_refs(r)[0] for r in refs]
        # Over the reference labels: an unparseable answer ("") counts against recall, not as a class.
        return float(score(y_true, list(preds), labels=sorted(set(y_true)), average=average, zero_division=0))

    fn.__doc__ = f"{kind.capitalize()} ({average} average over the reference labels, scikit-learn)."
    return fn


def _confusion_stats(preds: Sequence[str], refs: Sequence[Reference]) -> np.ndarray:
    """Per example and reference label: [true positive, false positive, false negative] (n x 3L)."""
    y_true = [_refs(r)[0] for r in refs]
    labels = sorted(set(y_true))
    pos = {lab: i for i, lab in enumerate(labels)}
    out = np.zeros((len(y_true), 3 * len(labels)))
    for i, (t, p) in enumerate(zip(y_true, preds)):
        if t == p:
            out[i, pos[t]] = 1
        else:
            out[i, 2 * len(labels) + pos[t]] = 1
            if p in pos:
                out[i, len(labels) + pos[p]] = 1
    return out


def _from_confusion(kind: str, average: str) -> Callable[[np.ndarray], float]:
    def score(totals: np.ndarray) -> float:
        tp, fp, fn = np.split(np.asarray(totals, dtype=float), 3)
        if average == "micro":
            tp, fp, fn = tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
            r = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
            f = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
        # A label absent from a resample (no true instance, no prediction) does not count in the average.
        present = (tp + fp + fn) > 0
        value = {"precision": p, "recall": r, "f1": f}[kind]
        return float(value[present].mean()) if present.any() else 0.0
    return score


for _kind in ("precision", "recall", "f1"):
    for _avg in ("macro", "micro"):
        register_metric(f"{_avg}_{_kind}" if _kind == "f1" else f"{_kind}_{_avg}", stats=_confusion_stats, from_stats=_from_confusion(_kind, _avg))(_labelled(_kind, _avg))


# ---- QA (SQuAD v1.1 rules: max over the acceptable answers)


def _f1_one(pred: str, gold: str) -> float:
    p, g = squad_normalize(pred).split(), squad_normalize(gold).split()
    common = Counter(p) & Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


@register_example_metric("exact_match", binary=True)
def exact_match(pred: str, ref: Reference) -> float:
    """1 when the prediction equals an acceptable answer after SQuAD normalisation, else 0."""
    return max(float(squad_normalize(pred) == squad_normalize(g)) for g in _refs(ref))


@register_example_metric("token_f1")
def token_f1(pred: str, ref: Reference) -> float:
    """the best SQuAD token-overlap F1 against the acceptable answers."""
    return max(_f1_one(pred, g) for g in _refs(ref))


# ---- summarisation and generation


@cache
def _scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)


def _rouge(kind: str) -> Callable[[str, Reference], float]:
    def one(pred: str, ref: Reference) -> float:
        if kind == "rougeLsum":  # summary-level LCS over sentences, one per line as rouge-score expects
            pred, ref = _lines(pred), [_lines(g) for g in _refs(ref)]
        return max(_scorer().score(g, pred)[kind].fmeasure for g in _refs(ref))

    one.__doc__ = f"{kind} F-measure (rouge-score, Porter stemming), best over the acceptable references."
    return one


def _lines(text: str) -> str:
    return "\n".join(s.strip() for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip())


for _kind in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
    register_example_metric(_kind)(_rouge(_kind))


@cache
def _sacre(kind: str) -> Any:
    return sacrebleu.BLEU() if kind == "bleu" else sacrebleu.CHRF()


def _sacre_stats(kind: str) -> Callable[[Sequence[str], Sequence[Reference]], np.ndarray]:
    # sacrebleu's own paired tests (sacrebleu.significance) resample these per-sentence statistics.
    def stats(preds: Sequence[str], refs: Sequence[Reference]) -> np.ndarray:
        return np.asarray(_sacre(kind)._extract_corpus_statistics(list(preds), _streams(refs)), dtype=float)
    return stats


def _sacre_score(kind: str) -> Callable[[np.ndarray], float]:
    def score(totals: np.ndarray) -> float:
        return float(_sacre(kind)._compute_score_from_stats(list(totals)).score)
    return score


@register_metric("bleu", scale=100.0, stats=_sacre_stats("bleu"), from_stats=_sacre_score("bleu"))
def bleu(preds: Sequence[str], refs: Sequence[Reference]) -> float:
    """Corpus BLEU from sacrebleu (0-100), with every example's acceptable references."""
    return float(sacrebleu.corpus_bleu(list(preds), _streams(refs)).score)


def _streams(refs: Sequence[Reference]) -> list[list[str]]:
    """sacrebleu's reference streams, of equal length: the last reference repeats to fill."""
    ref_lists = [_refs(r) for r in refs]
    width = max((len(r) for r in ref_lists), default=1)
    return [[r[min(i, len(r) - 1)] for r in ref_lists] for i in range(width)]


@register_metric("chrf", scale=100.0, stats=_sacre_stats("chrf"), from_stats=_sacre_score("chrf"))
def chrf(preds: Sequence[str], refs: Sequence[Reference]) -> float:
    """Corpus chrF from sacrebleu (0-100), with every example's acceptable references."""
    return float(sacrebleu.corpus_chrf(list(preds), _streams(refs)).score)


def _parse_json(text: str) -> Any:
    text = text.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, flags=re.S)
    return json.loads(fenced.group(1) if fenced else text)


@register_example_metric("json_valid", binary=True)
def json_valid(pred: str, ref: Reference) -> float:
    """1 when the output parses as JSON (a ```json fence allowed), else 0."""
    try:
        _parse_json(pred)
    except ValueError:
        return 0.0
    return 1.0


@register_example_metric("json_field_accuracy")
def json_field_accuracy(pred: str, ref: Reference) -> float:
    """the share of the reference object's fields that the output object has with equal values (0 if unparseable)."""
    best = 0.0
    for g in _refs(ref):
        try:
            gold = _parse_json(g)
        except ValueError:
            continue
        try:
            got = _parse_json(pred)
        except ValueError:
            return 0.0
        if not isinstance(gold, dict) or not gold:
            best = max(best, float(got == gold))
            continue
        got = got if isinstance(got, dict) else {}
        best = max(best, sum(1 for k, v in gold.items() if got.get(k) == v) / len(gold))
    return best


def check_metric(task: str, name: str) -> None:
    """Raise a config error naming ``objective.metric`` if the metric does not exist or fit the task.

    Raises:
        ConfigError: Unknown metric or one that does not apply to the task.
    """
    extra = {"loss", "perplexity"}
    if name in extra:
        return
    if name not in METRICS:
        near = difflib.get_close_matches(name, [*METRICS, *extra], n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise ConfigError(f"objective.metric: unknown metric '{name}'{hint} (available: {', '.join(sorted(METRICS))})")
    allowed = get_task(task).allowed_metrics
    if name not in allowed:
        raise ConfigError(f"objective.metric: '{name}' does not apply to task '{task}' "
                          f"(use one of: {', '.join(allowed)}, loss, perplexity)")


def higher_is_better(name: str) -> bool:
    """Direction of a metric, loss and perplexity included."""
    return name not in ("loss", "perplexity") and METRICS[name].higher_is_better


def compute_metrics(task: str, preds: Sequence[str], refs: Sequence[Reference]) -> dict[str, float]:
    """Every registered metric of the task's default set."""
    return {name: METRICS[name].fn(preds, refs) for name in get_task(task).metrics}
