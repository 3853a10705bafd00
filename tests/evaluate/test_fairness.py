"""Fairness: per-group metrics with the disparate-impact ratio, and counterfactual term swaps."""

import pytest

from tunesmith.evaluate.fairness import counterfactual_probe, group_metrics, swap_terms
from tunesmith.data.examples import Example
from tunesmith.models.load import load_base_model


def rows(spec):
    return [{"id": str(i), "prediction": p, "label": lab, "reference": lab, "meta": {"region": g} if g else {}}
            for i, (g, p, lab) in enumerate(spec)]


def test_group_metrics_and_the_four_fifths_flag():
    data = rows([("north", "a", "a")] * 4 + [("south", "a", "a"), ("south", "b", "a")] * 2 + [(None, "a", "a")])
    g = group_metrics(data, "region", "accuracy", "classification", min_count=4)
    assert [(x["value"], x["count"], x["metric"]) for x in g["groups"]] == [("north", 4, 1.0), ("south", 4, 0.5)]
    assert g["ratio"] == pytest.approx(0.5) and g["flagged"] and g["missing"] == 1
    # the same gap over 4 examples a group is not flagged under the default minimum of 30, and says why
    small = group_metrics(data, "region", "accuracy", "classification")
    assert small["ratio"] == pytest.approx(0.5) and not small["flagged"] and small["too_small"]
    assert all(x["method"] == "exact" and x["low"] <= x["metric"] <= x["high"] for x in small["groups"])
    even = group_metrics(rows([("north", "a", "a"), ("south", "a", "a")]), "region", "accuracy", "classification")
    assert even["ratio"] == 1.0 and not even["flagged"]


@pytest.mark.parametrize("text, expected", [
    ("He said his card was blocked.", "She said her card was blocked."),
    ("She lost her phone; the shepherd helped.", "He lost his phone; the shepherd helped."),  # not inside words
    ("Mr Smith called", "Ms Smith called"),
    ("no terms here", "no terms here"),
])
def test_swaps_go_both_ways_as_whole_words_keeping_case(text, expected):
    assert swap_terms(text, [("he", "she"), ("his", "her"), ("mr", "ms")]) == expected


def test_counterfactual_probe_on_the_tiny_model(tiny_model_dir):
    lm = load_base_model(tiny_model_dir)
    examples = [Example("1", "he wants a new card", "card_arrival", label="card_arrival"),
                Example("2", "where is my card", "card_arrival", label="card_arrival")]
    tuned = [{"id": "1", "prediction": "card_arrival"}, {"id": "2", "prediction": "card_arrival"}]
    out = counterfactual_probe(lm, examples, tuned, swaps=[("he", "she")], task="classification", system_prompt="S",
                               labels=["card_arrival", "pin_blocked"], max_seq_len=64, max_new_tokens=3, batch_size=2)
    assert out["probed"] == 1 and out["changed"] in (0, 1) and out["swaps"] == [["he", "she"]]
    if out["changed"]:
        assert out["examples"][0]["swapped"] == "she wants a new card"
