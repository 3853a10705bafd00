"""Blind human review of baseline versus tuned outputs, and what the ratings say.

``export_review`` writes a shuffled side-by-side sheet where each item shows the two outputs as
A and B in a random order per item; the key that says which is which is written apart.
``import_reviews`` un-blinds one or more raters' sheets, averages the rubric scores per
system with bootstrap intervals, computes the tuned model's win rate, and measures agreement
between raters: Cohen's kappa (quadratic weights on scores) for two raters, Krippendorff's
alpha (ordinal on scores, nominal on preferences) for more.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import krippendorff
import numpy as np
from sklearn.metrics import cohen_kappa_score

from tunesmith.data.io import read_jsonl, read_sheet, write_jsonl, write_sheet
from tunesmith.errors import DataError
from tunesmith.evaluate.stats import MIN_TEST_EXAMPLES, paired_shift

#: Rubric criteria rated 1-5 unless the caller gives others.
CRITERIA = ("correctness", "completeness", "tone", "adherence")
PREFERENCES = {"a": "A", "b": "B", "tie": "tie", "=": "tie", "": None}


def export_review(baseline: Path, tuned: Path, out: Path, *, seed: int = 0,
                  criteria: tuple[str, ...] = CRITERIA) -> tuple[Path, Path, Path]:
    """Write ``review.csv`` and ``review.jsonl`` (the blind sheet) and ``review_key.json`` into ``out``.

    Args:
        baseline: The baseline's predictions (``predictions/baseline.jsonl`` of a run).
        tuned: The tuned model's predictions, for the same examples.
        out: Folder for the sheet and the key.
        seed: Seed of the item order and the A/B assignment.
        criteria: Rubric criteria, each rated 1-5 for A and for B.

    Returns:
        The CSV sheet, the JSONL sheet and the key.

    Raises:
        DataError: The prediction files are missing or not for the same examples.
    """
    rows_b, rows_t = _predictions(baseline), _predictions(tuned)
    if [r["id"] for r in rows_b] != [r["id"] for r in rows_t]:
        raise DataError("baseline and tuned predictions are not for the same examples", path=tuned)
    rng = random.Random(seed)
    order = list(range(len(rows_t)))
    rng.shuffle(order)
    items, key = [], {}
    for n, i in enumerate(order, start=1):
        tuned_is_a = rng.random() < 0.5
        a, b = (rows_t[i], rows_b[i]) if tuned_is_a else (rows_b[i], rows_t[i])
        item = f"item-{n:04d}"
        key[item] = {"id": rows_t[i]["id"], "A": "tuned" if tuned_is_a else "baseline"}
        items.append({"item": item, "input": rows_t[i]["input"], "reference": rows_t[i]["reference"],
                      "output_A": a["output"], "output_B": b["output"],
                      **{f"{side}_{c}": "" for c in criteria for side in "AB"}, "preference": "", "comment": ""})
    out.mkdir(parents=True, exist_ok=True)
    sheet_csv, sheet_jsonl, key_path = out / "review.csv", out / "review.jsonl", out / "review_key.json"
    write_sheet(sheet_csv, items)
    write_jsonl(sheet_jsonl, items)
    key_path.write_text(json.dumps({"criteria": list(criteria), "items": key}, indent=2))
    return sheet_csv, sheet_jsonl, key_path


def _predictions(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError("file not found", path=path)
    return read_jsonl(path)


def _score(value: Any, sheet: Path, line: int, field: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        score = int(float(str(value).strip()))
    except ValueError:
        raise DataError(f"expected a score from 1 to 5, got {value!r}", path=sheet, line=line, field=field) from None
    if not 1 <= score <= 5:
        raise DataError(f"expected a score from 1 to 5, got {score}", path=sheet, line=line, field=field)
    return score


def read_ratings(sheets: list[Path], key_path: Path) -> list[dict[str, Any]]:
    """Un-blinded ratings: one row per (rater, item) with scores per system and the preferred system.

    Each sheet is one rater (the file name names the rater).

    Raises:
        DataError: A sheet names an unknown item, or a score or preference is not valid
            (file, line and field are named).
    """
    key = json.loads(key_path.read_text())
    criteria, items = key["criteria"], key["items"]
    out = []
    for sheet in sheets:
        for line, row in read_sheet(sheet):
            item = str(row.get("item", ""))
            if item not in items:
                raise DataError(f"unknown item {item!r} (not in {key_path.name})", path=sheet, line=line, field="item")
            a_is = items[item]["A"]
            b_is = "tuned" if a_is == "baseline" else "baseline"
            scores = {a_is: {}, b_is: {}}
            for c in criteria:
                scores[a_is][c] = _score(row.get(f"A_{c}"), sheet, line, f"A_{c}")
                scores[b_is][c] = _score(row.get(f"B_{c}"), sheet, line, f"B_{c}")
            pref_raw = str(row.get("preference") or "").strip().lower()
            if pref_raw not in PREFERENCES:
                raise DataError(f"expected A, B, tie or empty, got {pref_raw!r}", path=sheet, line=line, field="preference")
            pref = PREFERENCES[pref_raw]
            winner = {"A": a_is, "B": b_is, "tie": "tie", None: None}[pref]
            out.append({"rater": sheet.stem, "item": item, "id": items[item]["id"], "scores": scores, "winner": winner})
    return out


def _mean_interval(values: list[float], seed: int, resamples: int = 1000,
                   min_count: int = MIN_TEST_EXAMPLES) -> dict[str, Any] | None:
    """A mean score with its percentile bootstrap interval; under ``min_count`` ratings, the mean without one."""
    if not values:
        return None
    arr = np.asarray(values, float)
    if len(arr) < min_count:
        return {"value": float(arr.mean()), "low": None, "high": None, "n": len(arr), "method": "none"}
    idx = np.random.default_rng(seed).integers(0, len(arr), size=(resamples, len(arr)))
    low, high = np.percentile(arr[idx].mean(axis=1), [2.5, 97.5])
    return {"value": float(arr.mean()), "low": float(low), "high": float(high), "n": len(arr), "method": "bootstrap"}


def _win_rate(decided: list[str | None], seed: int) -> dict[str, Any] | None:
    """The tuned win rate (ties half) with the sign test of "no preference" and the interval that test gives.

    One procedure for both (:func:`~tunesmith.evaluate.stats.paired_shift` on the outcomes minus 0.5,
    exact for up to 16 decided items), so the interval contains 0.5 exactly when the preference is
    not significant, at any number of items.
    """
    if not decided:
        return None
    outcomes = np.array([1.0 if w == "tuned" else 0.0 if w == "baseline" else 0.5 for w in decided])
    shift = paired_shift(outcomes - 0.5, seed=seed, bound=0.5)
    return {"value": float(outcomes.mean()), "low": 0.5 + shift.diff.low, "high": 0.5 + shift.diff.high,
            "n": len(outcomes), "p_value": shift.p_value, "test": shift.test, "method": "permutation"}


def summarize(ratings: list[dict[str, Any]], criteria: list[str], seed: int = 0) -> dict[str, Any]:
    """Scores per system and criterion, the tuned win rate, and inter-rater agreement.

    Mean scores get a bootstrap interval from :data:`~tunesmith.evaluate.stats.MIN_TEST_EXAMPLES` ratings
    on (none below); the win rate the sign test's interval at any size.

    Returns:
        ``{"raters", "items", "scores": {system: {criterion: interval}}, "win_rate": {...}, "agreement": {...}}``.
    """
    scores: dict[str, dict[str, Any]] = {}
    for system in ("baseline", "tuned"):
        scores[system] = {c: _mean_interval([r["scores"][system][c] for r in ratings
                                             if r["scores"][system][c] is not None], seed) for c in criteria}
    decided = [r["winner"] for r in ratings if r["winner"] is not None]
    wins, losses, ties = decided.count("tuned"), decided.count("baseline"), decided.count("tie")
    # Win rate counts a tie as half a win, so that 0.5 means no preference.
    raters = sorted({r["rater"] for r in ratings})
    return {"raters": raters, "items": len({r["item"] for r in ratings}), "scores": scores,
            "win_rate": {"tuned_wins": wins, "baseline_wins": losses, "ties": ties, "rate": _win_rate(decided, seed)},
            "agreement": agreement(ratings, raters, criteria)}


def agreement(ratings: list[dict[str, Any]], raters: list[str], criteria: list[str]) -> dict[str, Any]:
    """Inter-rater agreement per criterion (both systems' scores pooled) and on the preference.

    Two raters: Cohen's kappa (quadratic weights for scores). More: Krippendorff's alpha
    (ordinal for scores, nominal for preferences). Fewer than two raters: no figure.
    """
    if len(raters) < 2:
        return {"method": None, "note": "one rater: agreement needs at least two"}
    by = defaultdict(dict)
    for r in ratings:
        by[r["rater"]][r["item"]] = r
    items = sorted({r["item"] for r in ratings})
    result: dict[str, Any] = {"method": "cohen_kappa" if len(raters) == 2 else "krippendorff_alpha"}
    units: dict[str, list[list[Any]]] = {}
    for c in criteria:
        units[c] = [[(by[rt].get(it) or {}).get("scores", {}).get(sys, {}).get(c) for it in items for sys in ("baseline", "tuned")]
                    for rt in raters]
    units["preference"] = [[(by[rt].get(it) or {}).get("winner") for it in items] for rt in raters]
    for name, matrix in units.items():
        result[name] = _agree(matrix, ordinal=name != "preference")
    return result


def _agree(matrix: list[list[Any]], ordinal: bool) -> float | None:
    if len(matrix) == 2:
        pairs = [(a, b) for a, b in zip(*matrix) if a is not None and b is not None]
        if len(pairs) < 2 or len({*(p[0] for p in pairs), *(p[1] for p in pairs)}) < 2:
            return None
        x, y = zip(*pairs)
        return float(cohen_kappa_score(x, y, weights="quadratic" if ordinal else None))
    codes = {v: i for i, v in enumerate(sorted({v for row in matrix for v in row if v is not None}, key=str))}
    if len(codes) < 2:
        return None
    data = np.array([[np.nan if v is None else (v if ordinal else codes[v]) for v in row] for row in matrix], float)
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal" if ordinal else "nominal"))
