"""LLM-as-judge through a real OpenAI-style endpoint on loopback: parsing, both orders, position bias, agreement."""

import json
import re

import pytest

from tests.conftest import ChatServer
from tunesmith.inference.clients import OpenAIGenerator
from tunesmith.evaluate.judge import judge_pairwise, judge_rubric, parse_rubric, parse_winner, summarize_judge

CRITERIA = ["correctness", "tone"]


def fair_judge(body):
    """Prefers the answer that says 'tuned'; scores such answers 5, others 2."""
    user = body["messages"][-1]["content"]
    if "ANSWER A:" in user:
        a = user.split("ANSWER A:")[1].split("ANSWER B:")[0]
        b = user.split("ANSWER B:")[1]
        winner = "A" if "tuned" in a and "tuned" not in b else "B" if "tuned" in b and "tuned" not in a else "tie"
        return json.dumps({"winner": winner, "rationale": f"{winner} is more helpful"})
    score = 5 if "tuned" in user.split("ANSWER:")[1] else 2
    return f'Here you go: {{"correctness": {score}, "tone": {score}, "rationale": "clear"}}'


def lazy_judge(body):
    """Always prefers whatever stands in position A: a position-biased judge."""
    return '{"winner": "A", "rationale": "first is best"}'


def outputs(n=6):
    base = [{"id": f"e{i}", "input": f"q{i}", "reference": f"r{i}", "output": f"base {i}"} for i in range(n)]
    tuned = [{**r, "output": f"tuned {i}" if i < n - 1 else f"base {i}"} for i, r in enumerate(base)]
    return base, tuned


@pytest.fixture()
def servers(monkeypatch):
    monkeypatch.setenv("TEST_JUDGE_KEY", "secret-key")
    made = {name: ChatServer(rule) for name, rule in (("fair", fair_judge), ("lazy", lazy_judge))}
    yield {name: OpenAIGenerator(s.url, "judge", api_key_env="TEST_JUDGE_KEY") for name, s in made.items()}, made
    for s in made.values():
        s.close()


def test_rubric_and_both_orders_with_a_fair_judge(servers):
    judges, raw = servers
    base, tuned = outputs()
    scored = judge_rubric(judges["fair"], tuned, CRITERIA)
    assert [r["scores"]["correctness"] for r in scored] == [5, 5, 5, 5, 5, 2] and scored[0]["rationale"] == "clear"
    pairs = judge_pairwise(judges["fair"], base, tuned)
    assert [p["winner"] for p in pairs] == ["tuned"] * 5 + ["tie"]
    assert len(raw["fair"].requests) == 6 + 12  # rubric once per item, pairwise twice
    prompts = [r["messages"][-1]["content"] for r in raw["fair"].requests[6:8]]
    assert re.search(r"ANSWER A:\ntuned 0", prompts[0]) and re.search(r"ANSWER A:\nbase 0", prompts[1])
    s = summarize_judge(scored, pairs, CRITERIA, human=[{"id": "e0", "winner": "tuned"}, {"id": "e5", "winner": "baseline"}])
    assert s["pairwise"]["win_rate"] == pytest.approx((5 + 0.5) / 6) and s["pairwise"]["disagree"] == 0
    assert s["rubric"]["correctness"] == pytest.approx(27 / 6)
    assert s["judge_human"]["items"] == 2 and s["judge_human"]["agreement"] == 0.5


def test_a_position_biased_judge_is_exposed_not_counted(servers):
    judges, _ = servers
    base, tuned = outputs()
    pairs = judge_pairwise(judges["lazy"], base, tuned)
    assert all(p["winner"] == "disagree" for p in pairs)
    s = summarize_judge(None, pairs, CRITERIA)["pairwise"]
    assert s["disagree"] == 6 and s["win_rate"] is None and s["picked_position_a"] == 1.0


@pytest.mark.parametrize("text, scores", [
    ('{"correctness": 4, "tone": "5", "rationale": "ok"}', {"correctness": 4, "tone": 5}),
    ("Correctness: 3\nTone - 2", {"correctness": 3, "tone": 2}),
    ('{"correctness": 9}', {"correctness": None, "tone": None}),
])
def test_rubric_parsing(text, scores):
    assert parse_rubric(text, CRITERIA)["scores"] == scores


@pytest.mark.parametrize("text, winner", [('{"winner": "b"}', "B"), ("Answer A is better.", "A"), ("TIE", "tie"), ("no idea", None)])
def test_winner_parsing(text, winner):
    assert parse_winner(text)[0] == winner


def test_unreadable_and_copied_replies_are_counted_never_averaged(monkeypatch):
    monkeypatch.setenv("TEST_JUDGE_KEY", "secret-key")
    replies = iter(['{"correctness": 4, "tone": 4, "rationale": "one sentence"}',  # the prompt's example, copied
                    "I cannot judge this.", "???",
                    '{"correctness": 5, "tone": 3, "rationale": "fine"}'])
    server = ChatServer(lambda body: next(replies))
    try:
        judge = OpenAIGenerator(server.url, "judge", api_key_env="TEST_JUDGE_KEY")
        _, tuned = outputs(4)
        scored = judge_rubric(judge, tuned, CRITERIA)
    finally:
        server.close()
    assert [r["status"] for r in scored] == ["copied", "unreadable", "unreadable", "scored"]
    s = summarize_judge(scored, None, CRITERIA)
    assert s["rubric_items"] == {"asked": 4, "scored": 1, "partial": 0, "unreadable": 2, "copied": 1}
    assert s["rubric"] == {"correctness": None, "tone": None} and s["rubric_judged"] == {"correctness": 1, "tone": 1}
