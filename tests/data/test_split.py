"""Splits: seeded determinism, stratification, user-given files, label checks."""

from collections import Counter

import pytest

from tests.conftest import write_classification_data
from tunesmith.config import Config
from tunesmith.data.examples import Example
from tunesmith.data.prepare import Splits, prepare_splits
from tunesmith.data.split import split_examples
from tunesmith.errors import DataError

NO_NEAR = {"data": {"dedup": {"near": False}}}


def make(n_per_label: dict[str, int]) -> list[Example]:
    return [Example(id=f"{lab}{i}", prompt=f"{lab} {i}", target=lab, label=lab)
            for lab, n in n_per_label.items() for i in range(n)]


def test_split_is_deterministic_and_seed_dependent():
    exs = make({"a": 50, "b": 30, "c": 20})
    s1 = split_examples(exs, (0.8, 0.1, 0.1), seed=1, stratify=True)
    s2 = split_examples(list(exs), (0.8, 0.1, 0.1), seed=1, stratify=True)
    s3 = split_examples(exs, (0.8, 0.1, 0.1), seed=2, stratify=True)
    ids = lambda s: [[e.id for e in part] for part in s]  # noqa: E731
    assert ids(s1) == ids(s2)
    assert ids(s1) != ids(s3)


def test_split_is_stratified_and_complete():
    exs = make({"a": 50, "b": 30, "c": 20})
    train, val, test = split_examples(exs, (0.8, 0.1, 0.1), seed=0, stratify=True)
    assert len(train) + len(val) + len(test) == 100
    assert not ({e.id for e in train} & {e.id for e in test})
    assert Counter(e.label for e in test) == {"a": 5, "b": 3, "c": 2}
    assert Counter(e.label for e in val) == {"a": 5, "b": 3, "c": 2}


def test_tiny_classes_keep_a_training_example():
    train, val, test = split_examples(make({"a": 1, "b": 2}), (0.34, 0.33, 0.33), seed=0, stratify=True)
    assert {e.label for e in train} == {"a", "b"}


def test_prepare_splits_from_config(tmp_path):
    write_classification_data(tmp_path / "data" / "train.jsonl", copies=5)
    cfg = Config.model_validate(NO_NEAR)  # the fixture's copies are near-duplicates by design
    splits = prepare_splits(cfg, tmp_path)
    assert splits.counts() == {"train": 72, "validation": 9, "test": 9}
    assert splits.labels == ["card_arrival", "exchange_rate", "pin_blocked"]
    assert "card_arrival, exchange_rate, pin_blocked" in splits.system_prompt
    again = prepare_splits(cfg, tmp_path)
    assert again.manifest() == splits.manifest()
    splits.save(tmp_path / "saved")
    loaded = Splits.load(tmp_path / "saved")
    assert loaded.manifest() == splits.manifest()


def test_user_given_validation_and_test_files(tmp_path):
    write_classification_data(tmp_path / "train.jsonl", copies=2)
    write_classification_data(tmp_path / "val.jsonl", copies=1)
    (tmp_path / "test.jsonl").write_text('{"text": "where is it", "label": "card_arrival"}\n')
    cfg = Config.model_validate({"data": {"train": "train.jsonl", "validation": "val.jsonl", "test": "test.jsonl",
                                          "dedup": {"near": False, "exact": False}}})
    splits = prepare_splits(cfg, tmp_path)
    assert splits.counts() == {"train": 36, "validation": 18, "test": 1}


def test_unknown_label_in_test_file_is_set_aside_and_strict_fails(tmp_path):
    write_classification_data(tmp_path / "train.jsonl", copies=1)
    write_classification_data(tmp_path / "val.jsonl", copies=1)
    (tmp_path / "test.jsonl").write_text('{"text": "hello", "label": "greeting"}\n{"text": "where is my card", "label": "card_arrival"}\n')
    data = {"train": "train.jsonl", "validation": "val.jsonl", "test": "test.jsonl", "dedup": {"near": False, "leakage": "report"}}
    splits = prepare_splits(Config.model_validate({"data": data}), tmp_path)
    assert [e.prompt for e in splits.test] == ["where is my card"]
    (r,) = splits.rejected
    assert (r.source, r.line, r.split, r.kind) == (str(tmp_path / "test.jsonl"), 1, "test", "field 'label': unknown label")
    assert r.raw == '{"text": "hello", "label": "greeting"}'  # the line as read, like every other set-aside row
    acc = splits.accounting()
    assert acc["rows_read"] == acc["kept"] + acc["rejected"] + sum(acc["removed"].values()) == 38
    with pytest.raises(DataError, match=r"data.strict is on and 1 set aside(.|\n)*test.jsonl:1: field 'label'"):
        prepare_splits(Config.model_validate({"data": {**data, "strict": True}}), tmp_path)


def test_accounting_adds_up_with_rejected_and_removed_rows(tmp_path):
    p = write_classification_data(tmp_path / "data" / "train.jsonl", copies=5)
    with p.open("a") as fh:
        fh.write('{"text": "broken"\n{"text": "", "label": "pin_blocked"}\n')
    splits = prepare_splits(Config.model_validate({"data": {"max_examples": 60, "dedup": {"near": False}}}), tmp_path)
    acc = splits.accounting()
    warnings = acc.pop("warnings")
    assert acc == {"rows_read": 92, "kept": 60, "oversampled": 0, "rejected": 2, "removed": {"data.max_examples": 30},
                   "rejected_by_reason": {"malformed JSON": 1, "field 'text': empty value": 1},
                   "conflicts": 0, "leakage_found": 0, "pii": {}, "pii_policy": "redact"}
    # 6 test examples over 3 classes: each class is too thin to measure
    assert len(warnings) == 4 and all("min_test_per_class=5" in w for w in warnings[:3])
    assert warnings[3].startswith("the test split has 6 examples, under eval.min_test_examples 30")
    splits.save(tmp_path / "saved")
    assert len((tmp_path / "saved" / "rejected.jsonl").read_text().splitlines()) == 2
    assert Splits.load(tmp_path / "saved").accounting() == {**acc, "warnings": warnings}


def test_classification_needs_labelled_rows(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"prompt": "p", "response": "r"}\n')
    cfg = Config.model_validate({"data": {"train": "train.jsonl"}})
    with pytest.raises(DataError, match="needs labelled rows"):
        prepare_splits(cfg, tmp_path)
