"""Completion log-probabilities: parity with transformers' own loss, one example at a time."""

import pytest
import torch

from tunesmith.data.encode import encode_example
from tunesmith.data.examples import Example
from tunesmith.inference.likelihood import completion_logprobs
from tunesmith.models.load import load_base_model


def test_batched_logprobs_equal_transformers_loss_per_example(tiny_model_dir):
    lm = load_base_model(tiny_model_dir, precision="fp32")
    examples = [Example(id=str(i), prompt=p, target=t) for i, (p, t) in enumerate(
        [("What is the capital of France?", "Paris"), ("Name a colour.", "A deep shade of blue, like the sea"),
         ("2 + 2?", "4"), ("Say hello.", "Hello there, how are you today?")])]
    encoded = [encode_example(lm.tokenizer, ex, None, 128) for ex in examples]
    got = completion_logprobs(lm, encoded, batch_size=3)  # mixed lengths: padding must not change a score
    for enc, (logprob, tokens) in zip(encoded, got):
        ids, labels = torch.tensor([enc.input_ids]), torch.tensor([enc.labels])
        with torch.no_grad():
            mean_loss = lm.model(input_ids=ids, labels=labels).loss  # transformers shifts and averages itself
        assert tokens == enc.n_completion
        assert logprob == pytest.approx(-float(mean_loss) * tokens, rel=1e-4)
