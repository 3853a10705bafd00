"""Task metrics, one registry entry each.

A metric takes the predictions and references (strings; a reference may be a list of
acceptable strings) and returns a number. Adding one means one :func:`register_metric`
here and one test row.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import sacrebleu
from rouge_score import rouge_scorer
from sklearn.metrics import accuracy_score, f1_score

from tunesmith.errors import ConfigError
from tunesmith.evaluate.normalize import squad_normalize

Reference = str | Sequence[str]


@dataclass(frozen=True)
class Metric:
    """A registered metric.

    Attributes:
        name: Registry key.
        fn: ``fn(predictions, references) -> float``.
        tasks: Tasks it applies to.
        higher_is_better: Direction of improvement.
        scale: ``1`` for fractions in [0, 1], ``100`` for scores in [0, 100].
    """

    name: str
    fn: Callable[[Sequence[str], Sequence[Reference]], float]
    tasks: tuple[str, ...]
    higher_is_better: bool = True
    scale: float = 1.0


METRICS: dict[str, Metric] = {}


def register_metric(name: str, tasks: tuple[str, ...], higher_is_better: bool = True, scale: float = 1.0):
    """Decorator that registers a metric function.

    Raises:
        ValueError: The name is taken.
    """

    def deco(fn: Callable[[Sequence[str], Sequence[Reference]], float]):
        if name in METRICS:
            raise ValueError(f"metric {name!r} is already registered")
        METRICS[name] = Metric(name, fn, tasks, higher_is_better, scale)
        return fn

    return deco


def _refs(ref: Reference) -> list[str]:
    return [ref] if isinstance(ref, str) else list(ref)


# ---- classification (predictions are already mapped to labels, "" when none matched)


@register_metric("accuracy", ("classification",))
def accuracy(preds: Sequence[str], refs: Sequence[Reference]) -> float:
    """Share of predictions equal to the reference label."""
    return float(accuracy_score([_refs(r)[0] for r in refs], list(preds)))


@register_metric("macro_f1", ("classification",))
def macro_f1(preds: Sequence[str], refs: Sequence[Reference]) -> float:
    """F1 averaged over the reference labels, each label weighted equally."""
    y_true = [_refs(r)[0] for r in refs]
    return float(f1_score(y_true, list(preds), labels=sorted(set(y_true)), average="macro", zero_division=0))


# ---- QA (SQuAD v1.1 rules: max over the acceptable answers)


def _f1_one(pred: str, gold: str) -> float:
    p, g = squad_normalize(pred).split(), squad_normalize(gold).split()
    common = Counter(p) & Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


@register_metric("exact_match", ("qa", "generation"))
def exact_match(preds: Sequence[str], refs: Sequence[Reference]) -> float:
    """Share of predictions equal to an acceptable answer after SQuAD normalisation."""
    if not preds:
        return 0.0
    hits = [max(float(squad_normalize(p) == squad_normalize(g)) for g in _refs(r)) for p, r in zip(preds, refs)]
    return sum(hits) / len(hits)


@register_metric("token_f1", ("qa", "generation"))
def token_f1(preds: Sequence[str], refs: Sequence[Reference]) -> float:
    """Mean over examples of the best token-overlap F1 against the acceptable answers."""
    if not preds:
        return 0.0
    return sum(max(_f1_one(p, g) for g in _refs(r)) for p, r in zip(preds, refs)) / len(preds)


# ---- summarisation and generation


@cache
def _scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def _rouge(kind: str) -> Callable[[Sequence[str], Sequence[Reference]], float]:
    def fn(preds: Sequence[str], refs: Sequence[Reference]) -> float:
        if not preds:
            return 0.0
        scorer = _scorer()
        return sum(max(scorer.score(g, p)[kind].fmeasure for g in _refs(r)) for p, r in zip(preds, refs)) / len(preds)

    fn.__doc__ = f"Mean {kind} F-measure (rouge-score, Porter stemming), best over the acceptable references."
    return fn


for _kind in ("rouge1", "rouge2", "rougeL"):
    register_metric(_kind, ("summarization", "generation", "qa"))(_rouge(_kind))


@register_metric("bleu", ("summarization", "generation"), scale=100.0)
def bleu(preds: Sequence[str], refs: Sequence[Reference]) -> float:
    """Corpus BLEU from sacrebleu (0-100), with every example's acceptable references."""
    ref_lists = [_refs(r) for r in refs]
    width = max((len(r) for r in ref_lists), default=1)
    # sacrebleu wants reference streams of equal length; repeat the last reference to fill.
    streams = [[r[min(i, len(r) - 1)] for r in ref_lists] for i in range(width)]
    return float(sacrebleu.corpus_bleu(list(preds), streams).score)


TASK_METRICS: dict[str, list[str]] = {
    "classification": ["accuracy", "macro_f1"],
    "qa": ["exact_match", "token_f1"],
    "summarization": ["rouge1", "rouge2", "rougeL", "bleu"],
    "generation": ["rouge1", "rouge2", "rougeL", "bleu"],
}


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
    if task not in METRICS[name].tasks:
        raise ConfigError(f"objective.metric: '{name}' does not apply to task '{task}' "
                          f"(use one of: {', '.join(TASK_METRICS[task])}, loss, perplexity)")


def higher_is_better(name: str) -> bool:
    """Direction of a metric, loss and perplexity included."""
    return name not in ("loss", "perplexity") and METRICS[name].higher_is_better


def compute_metrics(task: str, preds: Sequence[str], refs: Sequence[Reference]) -> dict[str, float]:
    """Every registered metric of the task's default set."""
    return {name: METRICS[name].fn(preds, refs) for name in TASK_METRICS[task]}
