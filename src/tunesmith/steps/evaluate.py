"""The evaluation steps bound to a project's config: the test split, the general-ability check, fairness."""

from __future__ import annotations

from typing import Any

from tunesmith.config import Config
from tunesmith.data.prepare import Splits, render_system_prompt
from tunesmith.evaluate.evaluator import EvalResult, evaluate_classifier, evaluate_model
from tunesmith.evaluate.fairness import counterfactual_probe, group_metrics
from tunesmith.evaluate.forgetting import measure_general
from tunesmith.evaluate.metrics import METRICS
from tunesmith.models.load import LoadedModel, is_classifier
from tunesmith.tasks import get_task


#: A head run's generative baseline reads the label list, however short the head's own max_seq_len is.
BASELINE_MIN_SEQ_LEN = 2048


def evaluate_split(lm: LoadedModel, splits: Splits, cfg: Config, name: str) -> EvalResult:
    """Evaluate the model in ``lm`` on the test split with the run's decoding settings.

    A model with a classification head is evaluated by its head; a generative model of a head run
    (the untuned baseline) answers as a generative run's would, given the label list.
    """
    if is_classifier(lm.model):
        return evaluate_classifier(lm, splits.test, labels=splits.labels or [], system_prompt=splits.system_prompt,
                                   cfg=cfg.eval, max_seq_len=cfg.model.max_seq_len, name=name)
    prompt, max_len = splits.system_prompt, cfg.model.max_seq_len
    if cfg.adapter.head == "classify":
        prompt = render_system_prompt(cfg.data.system_prompt or get_task(cfg.objective.task).system_prompt, splits.labels)
        max_len = max(max_len, BASELINE_MIN_SEQ_LEN)
    return evaluate_model(lm, splits.test, task=cfg.objective.task, system_prompt=prompt,
                          labels=splits.labels, cfg=cfg.eval, max_seq_len=max_len, name=name,
                          tasks=splits.tasks)


def general_check(lm: LoadedModel, cfg: Config) -> dict[str, Any]:
    """Perplexity on bundled general text and the general multiple-choice questions, for the model in ``lm``."""
    return measure_general(lm, max_seq_len=cfg.model.max_seq_len, batch_size=cfg.eval.batch_size)


def fairness_report(lm: LoadedModel, splits: Splits, cfg: Config, tuned: EvalResult) -> dict[str, Any] | None:
    """Per-group metrics and counterfactual probes of the tuned model, when ``eval.fairness`` asks for them."""
    fc, task = cfg.eval.fairness, cfg.objective.task
    if fc.attribute is None and not fc.counterfactual_swaps:
        return None
    metric = cfg.objective.primary_metric if cfg.objective.primary_metric in METRICS else get_task(task).metrics[0]
    out: dict[str, Any] = {}
    if fc.attribute is not None:
        out["groups"] = group_metrics(tuned.predictions, fc.attribute, metric, task, fc.min_ratio,
                                      min_count=cfg.eval.min_test_examples)
    if fc.counterfactual_swaps:
        examples = splits.test[: len(tuned.predictions)]
        out["counterfactual"] = counterfactual_probe(
            lm, examples, tuned.predictions, swaps=fc.counterfactual_swaps, task=task, system_prompt=splits.system_prompt,
            labels=splits.labels, max_seq_len=cfg.model.max_seq_len, max_new_tokens=cfg.eval.max_new_tokens,
            batch_size=cfg.eval.batch_size)
    return out
