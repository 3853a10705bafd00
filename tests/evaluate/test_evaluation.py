"""Batched generation and the evaluator on the tiny model."""

import torch

from tests.conftest import LABELS
from tunesmith.config import EvalConfig
from tunesmith.data.encode import encode_prompt
from tunesmith.data.examples import Example
from tunesmith.evaluate.evaluator import evaluate_model
from tunesmith.inference.generate import generate_batched
from tunesmith.models.load import load_base_model

PROMPTS = ["Where is my card?", "My PIN is blocked and I typed the wrong pin three times.", "Rate?", "What exchange rate do you use?"]


def test_batched_left_padded_generation_equals_one_at_a_time(tiny_model_dir):
    lm = load_base_model(tiny_model_dir)
    ids = [encode_prompt(lm.tokenizer, Example(id=str(i), prompt=p, target=""), "Classify.", 128)
           for i, p in enumerate(PROMPTS)]
    batched = generate_batched(lm, ids, max_new_tokens=6, batch_size=4)
    single = []
    for p in ids:
        out = lm.model.generate(input_ids=torch.tensor([p]), max_new_tokens=6, do_sample=False,
                                pad_token_id=lm.tokenizer.pad_token_id)
        single.append(lm.tokenizer.decode(out[0, len(p):], skip_special_tokens=True).strip())
    assert batched == single
    assert len({len(p) for p in ids}) > 1  # the prompts really needed padding


def test_evaluator_scores_every_example(tiny_model_dir):
    lm = load_base_model(tiny_model_dir)
    exs = [Example(id=str(i), prompt=p, target=LABELS[i % 3], label=LABELS[i % 3]) for i, p in enumerate(PROMPTS)]
    res = evaluate_model(lm, exs, task="classification", system_prompt="Classify.", labels=LABELS,
                         cfg=EvalConfig(max_new_tokens=4, batch_size=2), max_seq_len=128, name="t")
    assert set(res.metrics) == {"accuracy", "macro_f1", "precision_macro", "recall_macro", "micro_f1", "loss", "perplexity"}
    assert len(res.predictions) == 4
    assert {"id", "input", "reference", "output", "prediction", "score"} <= set(res.predictions[0])
    assert res.metrics["accuracy"] == sum(r["score"] for r in res.predictions) / 4
