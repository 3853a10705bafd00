"""The evaluation steps bound to a project's config: the test split, the general-ability check, fairness."""

from __future__ import annotations

from typing import Any

from tunesmith.config import Config
from tunesmith.data.prepare import Splits
from tunesmith.evaluate.evaluator import EvalResult, evaluate_model
from tunesmith.evaluate.fairness import counterfactual_probe, group_metrics
from tunesmith.evaluate.forgetting import measure_general
from tunesmith.evaluate.metrics import METRICS
from tunesmith.models.load import LoadedModel
from tunesmith.tasks import get_task


def evaluate_split(lm: LoadedModel, splits: Splits, cfg: Config, name: str) -> EvalResult:
    """Evaluate the model in ``lm`` on the test split with the run's decoding settings."""
    return evaluate_model(lm, splits.test, task=cfg.objective.task, system_prompt=splits.system_prompt,
                          labels=splits.labels, cfg=cfg.eval, max_seq_len=cfg.model.max_seq_len, name=name,
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
