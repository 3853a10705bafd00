"""Forgetting: the bundled general sets, the measurement on a model, and the warnings past thresholds."""

import pytest

from tunesmith.config import ForgettingConfig
from tunesmith.data.encode import encode_example
from tunesmith.evaluate.forgetting import compare_general, general_sets, measure_general
from tunesmith.models.load import load_base_model


def test_bundled_sets_are_plain_text_and_questions(tiny_tokenizer):
    text, probe = general_sets()
    assert len(text) == 30 and len(probe) == 12 and all(ex.plain for ex in text)
    enc = encode_example(tiny_tokenizer, text[0], None, 10_000)
    assert enc.labels == enc.input_ids  # perplexity over every token of the text
    assert all(ex.prompt.endswith(("?", ".")) and ex.target for ex in probe)


def test_measure_on_the_tiny_model(tiny_model_dir):
    out = measure_general(load_base_model(tiny_model_dir), max_seq_len=128, batch_size=8, max_new_tokens=3)
    assert out["perplexity"] > 1 and 0 <= out["probe_f1"] <= 1 and len(out["probe"]) == 12


@pytest.mark.parametrize("after_ppl, after_f1, n_warnings", [(11.0, 0.5, 0), (13.0, 0.5, 1), (11.0, 0.3, 1), (20.0, 0.1, 2)])
def test_warnings_past_the_thresholds(after_ppl, after_f1, n_warnings):
    probe = [{"id": "p", "prompt": "q", "reference": "r", "answer": "a", "f1": 0.5}]
    before = {"perplexity": 10.0, "probe_f1": 0.5, "probe": probe}
    after = {"perplexity": after_ppl, "probe_f1": after_f1, "probe": probe}
    out = compare_general(before, after, ForgettingConfig(max_perplexity_increase=0.2, max_probe_drop=0.1))
    assert len(out["warnings"]) == n_warnings
    assert out["perplexity_change"] == pytest.approx(after_ppl / 10 - 1)
