"""Evaluation: batched generation, task metrics, and the comparison of baseline and tuned models."""

from tunesmith.evaluate.evaluator import EvalResult, evaluate_model
from tunesmith.evaluate.metrics import METRICS, TASK_METRICS, check_metric, compute_metrics, register_metric

__all__ = ["EvalResult", "METRICS", "TASK_METRICS", "check_metric", "compute_metrics", "evaluate_model", "register_metric"]
