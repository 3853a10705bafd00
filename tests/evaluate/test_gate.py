"""The promotion gate on constructed cases: better, equal, worse, within the margin, and the vetoes."""

from __future__ import annotations

import pytest

from tunesmith.config import GateConfig
from tunesmith.evaluate.gate import check_set, decide
from tunesmith.evaluate.stats import compare_paired

REFS = ["a"] * 50 + ["b"] * 50


def comparison(production_right: int, candidate_right: int, overlap: int | None = None):
    """Production right on its first ``production_right`` examples, the candidate on a window of its own."""
    start = 0 if overlap is None else production_right - overlap
    prod = [r if i < production_right else "x" for i, r in enumerate(REFS)]
    cand = [r if start <= i < start + candidate_right else "x" for i, r in enumerate(REFS)]
    return compare_paired("accuracy", prod, cand, REFS, resamples=1000, seed=0)


def test_better_is_promoted_and_equal_or_worse_is_not():
    gate = GateConfig(fresh="better", frozen="not_worse", margin=0.02)
    better, equal, worse = comparison(60, 85), comparison(70, 70), comparison(80, 65)
    assert decide({"fresh": better, "frozen": equal}, gate).promote
    refused = decide({"fresh": equal, "frozen": equal}, gate)
    assert not refused.promote and refused.reasons == [refused.checks[0].reason]
    assert "not significantly better" in refused.reasons[0]
    # Better on fresh traffic but worse on the frozen split: refused, saying where.
    mixed = decide({"fresh": better, "frozen": worse}, gate)
    assert not mixed.promote and mixed.reasons[0].startswith("frozen test set: may be worse by more than 0.02")


def test_not_worse_uses_the_margin_on_the_interval():
    # One example lost in a hundred: a point change of -0.01, but the interval reaches further.
    slight = comparison(90, 89)
    assert slight.diff.value == pytest.approx(-0.01)
    assert not check_set("frozen", slight, "not_worse", margin=0.02).passed  # interval reaches below -0.02
    assert check_set("frozen", slight, "not_worse", margin=0.10).passed
    assert check_set("frozen", comparison(90, 90), "not_worse", margin=0.0).passed is False  # [0, 0] is not > 0
    assert check_set("frozen", comparison(90, 90), "not_worse", margin=0.001).passed


def test_vetoes_refuse_a_candidate_that_is_better():
    gate = GateConfig()
    better = comparison(60, 85)
    sets = {"fresh": better, "frozen": comparison(70, 70)}
    forgot = decide(sets, gate, forgetting_warnings=["perplexity on general text rose by 45%"])
    assert not forgot.promote and forgot.reasons == ["forgetting check: perplexity on general text rose by 45%"]
    unfair = decide(sets, gate, fairness_flagged=["region (ratio 0.61)"])
    assert not unfair.promote and "region" in unfair.reasons[0]
    no_veto = decide(sets, GateConfig(forgetting_veto=False), forgetting_warnings=["x"])
    assert no_veto.promote


def test_lower_is_better_metrics_flip_the_direction():
    c = comparison(60, 85)  # candidate's "accuracy" higher: for a lower-is-better metric it is worse
    assert check_set("fresh", c, "better", 0.0, higher_is_better=True).passed
    assert not check_set("fresh", c, "better", 0.0, higher_is_better=False).passed
