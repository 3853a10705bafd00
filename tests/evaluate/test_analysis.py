"""The verdict with intervals, slices worst-first, and the error analysis groups."""

import pytest

from tunesmith.evaluate.analysis import error_analysis, paired_comparisons, slice_breakdown, verdict
from tunesmith.evaluate.stats import Interval, PairedComparison, compare_paired


def iv(value, low, high):
    return Interval(value, low, high, 0.95)


def cmp(diff, p, significant):
    return PairedComparison("accuracy", iv(0.4, 0.3, 0.5), iv(0.4 + diff.value, 0.0, 1.0), diff, p, significant)


@pytest.mark.parametrize("metric, target, tuned, interval, comparison, baseline, expected", [
    ("accuracy", 0.8, 0.9, iv(0.9, 0.85, 0.95), None, 0.1, "met"),
    ("accuracy", 0.8, 0.85, iv(0.85, 0.75, 0.93), None, 0.1, "inconclusive"),
    ("accuracy", 0.8, 0.6, iv(0.6, 0.5, 0.7), None, 0.1, "not met"),
    ("perplexity", 5.0, 4.0, None, None, 20.0, "met"),  # no interval for perplexity: the point decides
    ("perplexity", 5.0, 6.0, None, None, 20.0, "not met"),
    ("accuracy", None, 0.6, None, cmp(iv(0.2, 0.1, 0.3), 0.001, True), 0.4, "met"),
    ("accuracy", None, 0.45, None, cmp(iv(0.05, -0.05, 0.15), 0.4, False), 0.4, "inconclusive"),
    ("accuracy", None, 0.2, None, cmp(iv(-0.2, -0.3, -0.1), 0.001, True), 0.4, "not met"),
    ("loss", None, 0.3, None, None, 0.4, "met"),
])
def test_verdict(metric, target, tuned, interval, comparison, baseline, expected):
    result, why = verdict(metric, target, tuned, interval, comparison, baseline)
    assert result == expected and why


def test_a_small_test_set_never_gets_a_verdict_from_a_point_value():
    # 4 examples of token F1: no interval exists, so a target cannot be judged however high the value
    none = Interval(0.95, None, None, 0.95, "none")
    result, why = verdict("token_f1", 0.5, 0.95, none, None, None, count=4)
    assert result == "inconclusive" and "4 test examples are too few" in why
    # exact intervals still decide, and the reason says the set is small
    result, why = verdict("accuracy", 0.1, 1.0, Interval(1.0, 0.48, 1.0, 0.95, "exact"), None, None, count=5)
    assert result == "met" and "exact interval" in why and "only 5 test examples" in why
    # two examples, both improved: the smallest possible p is 0.5, and the reason says so
    two = compare_paired("accuracy", ["y", "y"], ["x", "x"], ["x", "x"])
    result, why = verdict("accuracy", None, 1.0, two.tuned, two, 0.0, count=2)
    assert result == "inconclusive" and "smallest possible p is 0.5" in why


def rows(preds, labels, meta=None):
    return [{"id": str(i), "input": f"x{i}", "reference": lab, "label": lab, "meta": (meta or [{}] * len(preds))[i],
             "prediction": p, "score": float(p == lab)} for i, (p, lab) in enumerate(zip(preds, labels))]


def test_slices_put_what_got_worse_first_and_errors_are_grouped():
    labels = ["a", "a", "b", "b", "c", "c"]
    meta = [{"channel": "app"}, {"channel": "web"}] * 3
    base = rows(["a", "a", "b", "b", "x", "x"], labels, meta)
    tuned = rows(["a", "x", "b", "b", "c", "x"], labels, meta)
    table = slice_breakdown("classification", "accuracy", base, tuned, ["label", "channel"])
    assert (table[0]["field"], table[0]["value"], table[0]["change"]) in {("label", "a", -0.5), ("channel", "web", -1 / 3)}
    assert {(r["field"], r["value"]) for r in table} == {("label", "a"), ("label", "b"), ("label", "c"),
                                                         ("channel", "app"), ("channel", "web")}
    assert table[-1]["change"] == pytest.approx(0.5)  # label c improved most
    err = error_analysis(base, tuned)
    assert err["counts"] == {"regressed": 1, "improved": 1, "still_wrong": 1}
    assert err["regressed"][0]["id"] == "1" and err["improved"][0]["id"] == "4" and err["still_wrong"][0]["id"] == "5"


def test_comparisons_need_the_same_examples():
    base = rows(["a", "b"], ["a", "b"])
    with pytest.raises(ValueError, match="same examples"):
        paired_comparisons("classification", ["accuracy"], base, list(reversed(base)), resamples=100, seed=0, level=0.95)
