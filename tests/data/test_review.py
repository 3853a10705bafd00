"""Human review of generated rows: sheets out, decisions and edits back in, and what training then uses."""

import csv
import json

import pytest

from tunesmith.config import Config
from tunesmith.data.formats import FORMATS, example_to_row, row_to_example
from tunesmith.data.prepare import prepare_splits
from tunesmith.data.review import export_sheet, import_sheets
from tunesmith.errors import DataError
from tests.conftest import write_classification_data


def generated(path, n=4):
    rows = [{"text": f"generated question {i} about my card", "label": "card_arrival", "needs_review": True,
             "provenance": {"method": "paraphrase", "seed_ids": [f"train.jsonl:{i}"], "generator": "g"}} for i in range(n)]
    rows.append({"text": "already approved one", "label": "card_arrival", "needs_review": False})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_csv_round_trip_approves_rejects_edits_and_leaves_the_rest_waiting(tmp_path):
    gen = generated(tmp_path / "gen.jsonl")
    assert export_sheet(gen, tmp_path / "sheet.csv") == 4
    with (tmp_path / "sheet.csv").open(newline="") as fh:
        items = list(csv.DictReader(fh))
    assert list(items[0])[:4] == ["review_id", "decision", "text", "label"] and items[0]["seed_ids"] == "train.jsonl:0"
    items[0]["decision"], items[0]["text"] = "approve", "an edited question about my card"
    items[1]["decision"] = "Reject"
    items[2]["decision"] = "yes"
    with (tmp_path / "sheet.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(items[0]))
        writer.writeheader()
        writer.writerows(items)
    result = import_sheets([tmp_path / "sheet.csv"], gen, reviewer="kim")
    assert result.counts == {"approved": 2, "rejected": 1, "pending": 1, "edited": 1}
    rows = [json.loads(line) for line in gen.read_text().splitlines()]
    assert [r["needs_review"] for r in rows] == [False, False, True, False]
    assert rows[0]["text"] == "an edited question about my card" and rows[0]["review"]["edited"] == ["text"]
    moved = [json.loads(line) for line in result.rejected_path.read_text().splitlines()]
    assert moved[0]["text"] == "generated question 1 about my card" and moved[0]["review"]["decision"] == "rejected"


def test_jsonl_sheets_from_two_reviewers(tmp_path):
    gen = generated(tmp_path / "gen.jsonl")
    export_sheet(gen, tmp_path / "a.jsonl")
    items = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    (tmp_path / "a.jsonl").write_text(json.dumps({**items[0], "decision": "approve"}) + "\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({**items[3], "decision": "reject"}) + "\n")
    assert import_sheets([tmp_path / "a.jsonl", tmp_path / "b.jsonl"], gen).counts == \
        {"approved": 1, "rejected": 1, "pending": 2, "edited": 0}


@pytest.mark.parametrize("item, match", [
    ({"review_id": "1", "decision": "maybe"}, r"sheet.csv:2: field 'decision': 'maybe' is neither"),
    ({"review_id": "99", "decision": "approve"}, r"sheet.csv:2: field 'review_id': no row 99"),
    ({"review_id": "5", "decision": "approve"}, r"sheet.csv:2: field 'review_id': no row 5 waiting"),
])
def test_bad_sheet_rows_name_file_line_and_field_and_change_nothing(tmp_path, item, match):
    gen = generated(tmp_path / "gen.jsonl")
    before = gen.read_text()
    with (tmp_path / "sheet.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["review_id", "decision"])
        writer.writeheader()
        writer.writerow(item)
    with pytest.raises(DataError, match=match):
        import_sheets([tmp_path / "sheet.csv"], gen)
    assert gen.read_text() == before


def test_training_takes_only_reviewed_rows(tmp_path):
    write_classification_data(tmp_path / "data" / "train.jsonl")
    generated(tmp_path / "data" / "gen.jsonl")
    data = {"train": ["data/train.jsonl", "data/gen.jsonl"], "dedup": {"near": False}}
    acc = prepare_splits(Config.model_validate({"data": data}), tmp_path).accounting()
    assert acc["removed"] == {"needs_review": 4} and acc["rows_read"] == 59
    splits = prepare_splits(Config.model_validate({"data": {**data, "unreviewed": "include"}}), tmp_path)
    assert "needs_review" not in splits.accounting()["removed"]
    # generated rows only ever train: validation and test stay real data
    assert sum("provenance" in ex.meta for ex in splits.train) == 4  # the four generated rows
    assert not any("provenance" in ex.meta for ex in splits.validation + splits.test)


@pytest.mark.parametrize("fmt, row", [
    ("text_label", {"text": "hi", "label": "greet"}),
    ("prompt_response", {"prompt": "p", "response": "r", "system": "s"}),
    ("qa", {"question": "q?", "answer": "a", "context": "c"}),
    ("alpaca", {"instruction": "i", "output": "o"}),
    ("messages", {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}),
    ("sharegpt", {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}),
    ("text", {"text": "a b c d"}),
    ("document_summary", {"document": "d", "summary": "s"}),
])
def test_every_format_writes_rows_it_reads_back(fmt, row):
    assert set(FORMATS) == {"text_label", "prompt_response", "qa", "alpaca", "messages", "sharegpt", "text", "document_summary"}
    ex = row_to_example(FORMATS[fmt], row, {}, path="f.jsonl", line=1)
    assert example_to_row(fmt, ex, {}) == row
