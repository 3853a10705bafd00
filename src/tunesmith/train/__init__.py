"""Training: batching, the completion-only loss, and the optimisation loop."""

from tunesmith.train.loop import TrainResult, train_adapter
from tunesmith.train.loss import completion_loss, evaluate_loss

__all__ = ["TrainResult", "completion_loss", "evaluate_loss", "train_adapter"]
