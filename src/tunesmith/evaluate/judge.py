"""LLM-as-judge: rubric scores and pairwise preferences, by a local model or an OpenAI-compatible endpoint.

Rubric judging asks for a 1-5 score per criterion with a short rationale. Pairwise judging
shows the baseline and tuned answers twice, in both orders, so that a judge that favours a
position cancels out: a preference counts only when both orders agree; otherwise the pair is a
disagreement. Every judgement keeps the judge's own words. Where human ratings exist for the
same items, the agreement between judge and humans is reported.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import cohen_kappa_score

from tunesmith.inference.clients import Generator

JUDGE_SYSTEM = "You are a strict, fair evaluator of answers. Follow the output format exactly."
#: A mean score or win rate over fewer judged items than this is not given: it would read as a finding.
MIN_JUDGED = 5
#: The rationale of the example reply shown in the rubric prompt; a reply that repeats the example is no judgement.
EXAMPLE_RATIONALE = "one sentence"
RUBRIC_PROMPT = """Rate the ANSWER to the REQUEST on each criterion from 1 (very poor) to 5 (excellent).
Criteria: {criteria}.
{reference}REQUEST:
{input}

ANSWER:
{output}

Reply with one JSON object only, for example {example}"""
PAIR_PROMPT = """Which answer to the REQUEST is better overall (correct, complete, appropriate in tone, following the instructions)?
{reference}REQUEST:
{input}

ANSWER A:
{a}

ANSWER B:
{b}

Reply with one JSON object only: {{"winner": "A" or "B" or "tie", "rationale": "one sentence"}}"""


def _reference(ref: str | None) -> str:
    return f"REFERENCE ANSWER (for your information):\n{ref}\n\n" if ref else ""


def _json_object(text: str) -> dict[str, Any] | None:
    for match in re.finditer(r"\{.*?\}", text, flags=re.S):
        try:
            value = json.loads(match.group(0))
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def parse_rubric(text: str, criteria: Sequence[str], example: dict[str, Any] | None = None) -> dict[str, Any]:
    """Scores (1-5 or None when missing), the rationale, and the reply's status from a judge's reply.

    The status is ``scored`` (every criterion), ``partial``, ``unreadable`` (no score at all), or
    ``copied``: the reply repeats the prompt's ``example`` object, which judges nothing.
    """
    obj = _json_object(text) or {}
    if example is not None and obj == example:
        return {"scores": dict.fromkeys(criteria), "rationale": str(obj.get("rationale", "")), "status": "copied"}
    scores: dict[str, int | None] = {}
    for c in criteria:
        value = obj.get(c)
        if value is None:  # "correctness: 4" in prose
            m = re.search(rf"{re.escape(c)}\W{{0,3}}(\d)", text, flags=re.I)
            value = m.group(1) if m else None
        try:
            score = int(float(value)) if value is not None else None
        except (TypeError, ValueError):
            score = None
        scores[c] = score if score is not None and 1 <= score <= 5 else None
    found = sum(v is not None for v in scores.values())
    status = "scored" if found == len(criteria) else "partial" if found else "unreadable"
    return {"scores": scores, "rationale": str(obj.get("rationale", "")) or text.strip()[:500], "status": status}


def parse_winner(text: str) -> tuple[str | None, str]:
    """``A``, ``B``, ``tie`` or None (unreadable), and the rationale."""
    obj = _json_object(text)
    raw = str((obj or {}).get("winner", "")).strip().lower()
    if not raw:
        m = re.search(r"\b(answer\s+)?(a|b|tie)\b", text.strip().lower())
        raw = m.group(2) if m else ""
    winner = {"a": "A", "b": "B", "tie": "tie"}.get(raw)
    return winner, str((obj or {}).get("rationale", "")) or text.strip()[:500]


def judge_rubric(judge: Generator, rows: Sequence[dict[str, Any]], criteria: Sequence[str],
                 seed: int = 0) -> list[dict[str, Any]]:
    """Rubric scores for each prediction row (``input``, ``reference``, ``output``), with the rationale."""
    example_obj = {**{c: 4 for c in criteria}, "rationale": EXAMPLE_RATIONALE}
    example = json.dumps(example_obj)
    asks = [[{"role": "system", "content": JUDGE_SYSTEM},
             {"role": "user", "content": RUBRIC_PROMPT.format(criteria=", ".join(criteria), reference=_reference(r.get("reference")),
                                                              input=r["input"], output=r["output"], example=example)}]
            for r in rows]
    replies = judge.complete(asks, 0.0, seed)
    return [{"id": r["id"], **parse_rubric(text, criteria, example_obj), "raw": text} for r, text in zip(rows, replies)]


def judge_pairwise(judge: Generator, baseline: Sequence[dict[str, Any]], tuned: Sequence[dict[str, Any]],
                   seed: int = 0) -> list[dict[str, Any]]:
    """Tuned versus baseline for each example, asked in both orders.

    Returns:
        Per example: the verdict of each order (as the winning system), the combined ``winner``
        (``tuned``, ``baseline``, ``tie``, ``disagree`` when the orders conflict, ``unreadable`` when an
        order's reply names no winner) and both rationales.
    """
    asks = []
    for b, t in zip(baseline, tuned):
        for a_text, b_text in ((t["output"], b["output"]), (b["output"], t["output"])):
            asks.append([{"role": "system", "content": JUDGE_SYSTEM},
                         {"role": "user", "content": PAIR_PROMPT.format(reference=_reference(t.get("reference")),
                                                                        input=t["input"], a=a_text, b=b_text)}])
    replies = judge.complete(asks, 0.0, seed)
    out = []
    for i, t in enumerate(tuned):
        first, why1 = parse_winner(replies[2 * i])  # A = tuned
        second, why2 = parse_winner(replies[2 * i + 1])  # A = baseline
        as_system = ({"A": "tuned", "B": "baseline", "tie": "tie"}.get(first or ""),
                     {"A": "baseline", "B": "tuned", "tie": "tie"}.get(second or ""))
        if None in as_system:  # an order the judge gave no readable verdict for
            winner = "unreadable"
        else:
            winner = as_system[0] if as_system[0] == as_system[1] else "disagree"
        out.append({"id": t["id"], "orders": list(as_system), "winner": winner, "rationales": [why1, why2]})
    return out


def summarize_judge(rubric: Sequence[dict[str, Any]] | None, pairwise: Sequence[dict[str, Any]] | None,
                    criteria: Sequence[str], human: Sequence[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Mean rubric scores, pairwise counts and win rate, position-bias signs, and judge-human agreement.

    Args:
        rubric: Rubric judgements of the tuned outputs (or None).
        pairwise: Pairwise judgements (or None).
        criteria: The rubric's criteria.
        human: Un-blinded human ratings (``id`` and ``winner``), when there are any.
    """
    out: dict[str, Any] = {"min_judged": MIN_JUDGED}
    if rubric:
        status = Counter(r.get("status", "scored") for r in rubric)
        out["rubric_items"] = {"asked": len(rubric), "scored": status["scored"], "partial": status["partial"],
                               "unreadable": status["unreadable"], "copied": status["copied"]}
        # Only real judgements count; a criterion judged on fewer than MIN_JUDGED items gets no mean.
        judged = {c: [r["scores"][c] for r in rubric if r["scores"][c] is not None] for c in criteria}
        out["rubric"] = {c: _mean(v) if len(v) >= MIN_JUDGED else None for c, v in judged.items()}
        out["rubric_judged"] = {c: len(v) for c, v in judged.items()}
        out["rubric_unreadable"] = status["unreadable"] + status["copied"]
    if pairwise:
        counts = Counter(p["winner"] for p in pairwise)
        decided = counts["tuned"] + counts["baseline"] + counts["tie"]
        first_a = sum(1 for p in pairwise if p["orders"][0] == "tuned") + sum(1 for p in pairwise if p["orders"][1] == "baseline")
        out["pairwise"] = {"tuned": counts["tuned"], "baseline": counts["baseline"], "tie": counts["tie"],
                           "disagree": counts["disagree"], "unreadable": counts["unreadable"],
                           "win_rate": (counts["tuned"] + 0.5 * counts["tie"]) / decided if decided >= MIN_JUDGED
                           else None,
                           # how often the judge picked whatever stood in position A: 0.5 means no position bias
                           "picked_position_a": first_a / (2 * len(pairwise))}
        if human:
            out["judge_human"] = _judge_human(pairwise, human)
    return out


def _mean(values: Sequence[int | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _judge_human(pairwise: Sequence[dict[str, Any]], human: Sequence[dict[str, Any]]) -> dict[str, Any]:
    judge_by_id = {p["id"]: p["winner"] for p in pairwise if p["winner"] not in ("disagree", "unreadable")}
    pairs = [(judge_by_id[h["id"]], h["winner"]) for h in human if h.get("winner") and h["id"] in judge_by_id]
    if not pairs:
        return {"items": 0, "agreement": None, "kappa": None}
    agree = sum(a == b for a, b in pairs) / len(pairs)
    labels = {v for pair in pairs for v in pair}
    kappa = float(cohen_kappa_score(*zip(*pairs))) if len(labels) > 1 else None
    return {"items": len(pairs), "agreement": agree, "kappa": kappa}
