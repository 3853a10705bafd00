"""Blind human review: the sheet hides which output is which; un-blinding, win rate and agreement."""

import csv
import json

import krippendorff
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from tunesmith.errors import DataError
from tunesmith.evaluate.human_eval import export_review, read_ratings, summarize


def predictions(tmp_path, n=6):
    base = [{"id": f"ex{i}", "input": f"q{i}", "reference": f"r{i}", "output": f"base answer {i}"} for i in range(n)]
    tuned = [{**r, "output": f"tuned answer {i}"} for i, r in enumerate(base)]
    for name, rows in (("baseline", base), ("tuned", tuned)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path / "baseline.jsonl", tmp_path / "tuned.jsonl"


def rate(sheet_csv, out, fill):
    with sheet_csv.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        fill(row, "A" if row["output_A"].startswith("tuned") else "B")
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


def test_sheet_is_blind_and_shuffled(tmp_path):
    sheet, sheet_jsonl, key = export_review(*predictions(tmp_path, 20), tmp_path / "review", seed=3)
    with sheet.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 20 and "baseline" not in sheet.read_text() and "tuned\"" not in sheet.read_text()
    sides = json.loads(key.read_text())["items"]
    assert {v["A"] for v in sides.values()} == {"baseline", "tuned"}  # both orders occur
    assert [r["input"] for r in rows] != [f"q{i}" for i in range(20)]  # shuffled
    for r in rows:
        assert r["output_A"].startswith("tuned" if sides[r["item"]]["A"] == "tuned" else "base")
    assert len(sheet_jsonl.read_text().splitlines()) == 20


def test_two_raters_unblinded_with_cohens_kappa(tmp_path):
    sheet, _, key = export_review(*predictions(tmp_path), tmp_path / "review", seed=0)

    def ana(row, tuned_side):
        other = "B" if tuned_side == "A" else "A"
        row[f"{tuned_side}_correctness"], row[f"{other}_correctness"] = "5", "2"
        row["preference"] = tuned_side

    def ben(row, tuned_side):
        other = "B" if tuned_side == "A" else "A"
        n = int(row["input"][1:])
        row[f"{tuned_side}_correctness"], row[f"{other}_correctness"] = ("4", "2") if n % 3 else ("3", "3")
        row["preference"] = tuned_side if n % 3 else "tie"

    ratings = read_ratings([rate(sheet, tmp_path / "ana.csv", ana), rate(sheet, tmp_path / "ben.csv", ben)], key)
    s = summarize(ratings, json.loads(key.read_text())["criteria"])
    assert s["raters"] == ["ana", "ben"] and s["items"] == 6
    assert s["win_rate"]["tuned_wins"] == 10 and s["win_rate"]["ties"] == 2 and s["win_rate"]["baseline_wins"] == 0
    assert s["scores"]["tuned"]["correctness"]["value"] == pytest.approx((5 * 6 + 4 * 4 + 3 * 2) / 12)
    # 12 ratings: a mean without an interval; the win rate by the sign test (10 wins, 2 ties, no losses)
    assert s["scores"]["tuned"]["correctness"]["low"] is None
    win = s["win_rate"]["rate"]
    assert win["value"] == pytest.approx(11 / 12) and win["test"] == "exact permutation"
    assert win["p_value"] == pytest.approx(2 / 2 ** 10)  # the ties (differences of 0) do not count
    assert 0.5 < win["low"] <= win["value"] <= win["high"] <= 1
    assert s["scores"]["tuned"]["completeness"] is None  # nobody rated it
    order = sorted({r["item"] for r in ratings})
    by = {(r["rater"], r["item"]): r for r in ratings}
    x = [by[("ana", i)]["scores"][sys]["correctness"] for i in order for sys in ("baseline", "tuned")]
    y = [by[("ben", i)]["scores"][sys]["correctness"] for i in order for sys in ("baseline", "tuned")]
    assert s["agreement"]["method"] == "cohen_kappa"
    assert s["agreement"]["correctness"] == pytest.approx(cohen_kappa_score(x, y, weights="quadratic"))


def test_three_raters_use_krippendorffs_alpha(tmp_path):
    sheet, _, key = export_review(*predictions(tmp_path), tmp_path / "review", seed=1)
    files = []
    for k, name in enumerate(("r1", "r2", "r3")):
        def fill(row, tuned_side, k=k):
            n = int(row["input"][1:])
            row[f"{tuned_side}_tone"] = str(min(5, 2 + (n + k) % 4))
        files.append(rate(sheet, tmp_path / f"{name}.csv", fill))
    ratings = read_ratings(files, key)
    s = summarize(ratings, ["tone"])
    items = sorted({r["item"] for r in ratings})
    by = {(r["rater"], r["item"]): r for r in ratings}
    data = np.array([[by[(rt, i)]["scores"][sys]["tone"] or np.nan for i in items for sys in ("baseline", "tuned")]
                     for rt in ("r1", "r2", "r3")], float)
    assert s["agreement"]["method"] == "krippendorff_alpha"
    assert s["agreement"]["tone"] == pytest.approx(krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal"))


def test_bad_scores_name_the_sheet_line_and_field(tmp_path):
    sheet, _, key = export_review(*predictions(tmp_path), tmp_path / "review")
    bad = rate(sheet, tmp_path / "cat.csv", lambda row, side: row.update({"A_tone": "7"}))
    with pytest.raises(DataError, match=r"cat.csv:2: field 'A_tone': expected a score from 1 to 5, got 7"):
        read_ratings([bad], key)
