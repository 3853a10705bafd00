"""Forgetting: the bundled general sets, the measurement on a model, and warnings that need both a
significant worsening and a relative change past the threshold."""

import math

import numpy as np
import pytest

from tunesmith.config import ForgettingConfig
from tunesmith.data.encode import encode_example
from tunesmith.evaluate.forgetting import compare_general, general_sets, measure_general
from tunesmith.models.load import load_base_model
from tunesmith.train.loss import evaluate_loss


def test_bundled_sets_are_plain_text_and_four_option_questions(tiny_tokenizer):
    text, questions = general_sets()
    assert len(text) == 30 and len(questions) == 60 and all(ex.plain for ex in text)
    enc = encode_example(tiny_tokenizer, text[0], None, 10_000)
    assert enc.labels == enc.input_ids  # perplexity over every token of the text
    assert all(len(q["options"]) == 4 and len(set(q["options"])) == 4 and 0 <= q["answer"] < 4 for q in questions)
    assert len({q["answer"] for q in questions}) == 4  # the right option is not always in one place
    assert len({q["id"] for q in questions}) == 60


def test_measure_on_the_tiny_model(tiny_model_dir):
    lm = load_base_model(tiny_model_dir, precision="fp32")
    out = measure_general(lm, max_seq_len=128, batch_size=8)
    assert len(out["choice"]) == 60 and len(out["text"]) == 30
    assert 0 < out["choice_probability"] < 1 and 0 <= out["choice_accuracy"] <= 1
    # the perplexity is the token-weighted one, as the training loss would give it
    text, _ = general_sets()
    loss = evaluate_loss(lm.model, [encode_example(lm.tokenizer, ex, None, 128) for ex in text],
                         lm.tokenizer.pad_token_id, 8, lm.device, lm.autocast)
    assert out["perplexity"] == pytest.approx(math.exp(loss), rel=1e-4)


def fake(probabilities, losses):
    """A measurement with the given per-question probabilities of the right option and per-paragraph losses."""
    choice = [{"id": f"q{i}", "question": "?", "options": ["a", "b", "c", "d"], "answer": 0, "probability": p,
               "chosen": 0 if p > 0.3 else 1} for i, p in enumerate(probabilities)]
    text = [{"id": f"t{i}", "logprob": -loss * 10, "tokens": 10} for i, loss in enumerate(losses)]
    return {"perplexity": math.exp(np.mean(losses)), "choice_probability": float(np.mean(probabilities)),
            "choice_accuracy": float(np.mean([c["chosen"] == 0 for c in choice])), "text": text, "choice": choice}


@pytest.mark.parametrize("prob_drop, loss_rise, warned", [
    (0.0, 0.0, []),
    (0.02, 0.05, []),                      # significant but within both thresholds
    (0.2, 0.0, ["multiple-choice"]),       # the right answers lost 20/60 = a third of their probability
    (0.0, 0.4, ["perplexity"]),            # exp(0.4) - 1 = 49% more perplexity
    (0.2, 0.4, ["perplexity", "multiple-choice"]),
])
def test_warnings_need_a_significant_change_past_the_threshold(prob_drop, loss_rise, warned):
    rng = np.random.default_rng(0)
    probs = rng.uniform(0.4, 0.8, 60)
    losses = rng.uniform(2.0, 3.0, 30)
    after_probs = np.clip(probs - prob_drop + rng.normal(0, 0.01, 60), 0, 1)
    after_losses = losses + loss_rise + rng.normal(0, 0.01, 30)
    out = compare_general(fake(probs, losses), fake(after_probs, after_losses),
                          ForgettingConfig(max_perplexity_increase=0.2, max_choice_drop=0.1))
    assert [("perplexity" if "perplexity" in w else "multiple-choice") for w in out["warnings"]] == warned
    ppl, prob = out["perplexity"], out["choice_probability"]
    assert ppl["change"] == pytest.approx(ppl["after"] / ppl["before"] - 1)
    assert prob["change"] == pytest.approx(prob["after"] / prob["before"] - 1)
    for part in (ppl, prob, out["choice_accuracy"]):
        assert part["low"] <= part["change"] <= part["high"]
        assert (part["p_value"] < 0.05) == (part["low"] > 0 or part["high"] < 0)


def test_a_large_drop_on_few_items_is_not_called_forgetting():
    # 3 questions, all much worse: the smallest possible p of 3 paired items is 0.25, so no warning
    before, after = fake([0.9, 0.8, 0.9], [2.0] * 3), fake([0.3, 0.2, 0.3], [2.0] * 3)
    out = compare_general(before, after, ForgettingConfig())
    assert out["choice_probability"]["change"] < -0.5 and out["choice_probability"]["p_value"] >= 0.25
    assert out["warnings"] == []
