"""Token lengths and their policy, class balance, plain text, and rows waiting for review."""

import json

import pytest

from tunesmith.config import BalanceConfig, Config
from tunesmith.data.balance import balance_train
from tunesmith.data.encode import encode_example, render_preview
from tunesmith.data.examples import Example
from tunesmith.data.lengths import token_lengths
from tunesmith.data.prepare import Splits, prepare_splits
from tunesmith.errors import DataError
from tests.conftest import write_classification_data


def test_fast_lengths_equal_the_exact_encoding(tiny_tokenizer):
    examples = [Example("a", "where is my card", "card_arrival"),
                Example("b", "x " * 40, "a longer answer here", system="Own system message."),
                Example("c", "hi", "there", turns=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                                                   {"role": "user", "content": "and?"}, {"role": "assistant", "content": "there"}]),
                Example("d", "The quick brown", "fox jumps", plain=True)]
    stats = token_lengths(tiny_tokenizer, examples, "Classify it.", 64)
    exact = [len(encode_example(tiny_tokenizer, ex, "Classify it.", 10_000).input_ids) for ex in examples]
    assert stats.lengths == exact
    assert stats.over == [i for i, n in enumerate(exact) if n > 64] and stats.over


def test_plain_text_has_no_template_and_loss_everywhere(tiny_tokenizer):
    ex = Example("d", "The quick brown", "fox jumps", plain=True)
    enc = encode_example(tiny_tokenizer, ex, "ignored system", 100)
    assert enc.labels == enc.input_ids
    assert tiny_tokenizer.decode(enc.input_ids) == "The quick brown fox jumps<|im_end|>"
    preview = render_preview(tiny_tokenizer, Example("a", "where is my card", "card_arrival"), "S", 100)
    assert preview["text"].startswith("<|im_start|>system\nS<|im_end|>") and preview["loss_on"] == "card_arrival<|im_end|>\n"


@pytest.mark.parametrize("policy", ["truncate", "drop", "fail"])
def test_length_policy(tmp_path, tiny_tokenizer, policy):
    write_classification_data(tmp_path / "data" / "train.jsonl")
    with (tmp_path / "data" / "train.jsonl").open("a") as fh:
        fh.write(json.dumps({"text": "please help " * 30, "label": "pin_blocked"}) + "\n")
    cfg = Config.model_validate({"data": {"dedup": {"near": False}, "length_policy": policy, "split": {"test": 0.2, "validation": 0.1, "train": 0.7}},
                                 "model": {"max_seq_len": 200}})
    if policy == "fail":
        with pytest.raises(DataError, match=r"longer than model.max_seq_len=200(.|\n)*train.jsonl:\d+: \d+ tokens"):
            prepare_splits(cfg, tmp_path, tokenizer=tiny_tokenizer)
        return
    splits = prepare_splits(cfg, tmp_path, tokenizer=tiny_tokenizer)
    over = sum(s["over_max_seq_len"] for s in splits.lengths.values())
    assert over == 1
    acc = splits.accounting()
    assert acc["removed"].get("length", 0) == (1 if policy == "drop" else 0)
    assert acc["rows_read"] == acc["kept"] + acc["rejected"] + sum(acc["removed"].values())
    assert splits.preview and "<|im_start|>user" in splits.preview["text"]


def _labelled(counts):
    return [Example(f"{lab}{i}", f"text {lab} {i}", lab, label=lab) for lab, n in counts.items() for i in range(n)]


def test_balance_strategies_and_thin_class_warnings():
    train, test = _labelled({"a": 12, "b": 4, "c": 2}), _labelled({"a": 6, "b": 2, "c": 1})
    none = balance_train(train, test, ["a", "b", "c"], BalanceConfig(min_per_class=3), seed=0)
    assert none.report["imbalance_ratio"] == 6.0 and none.train == train and none.class_weights is None
    assert [w.split("'")[1] for w in none.warnings] == ["c", "b", "c"]  # c too few to learn; b, c too few to measure
    over = balance_train(train, test, ["a", "b", "c"], BalanceConfig(strategy="oversample"), seed=0)
    assert over.report["train_counts_after"] == {"a": 12, "b": 12, "c": 12} and over.copies == 18
    assert len({ex.id for ex in over.train}) == 36
    under = balance_train(train, test, ["a", "b", "c"], BalanceConfig(strategy="undersample"), seed=0)
    assert under.report["train_counts_after"] == {"a": 2, "b": 2, "c": 2} and len(under.dropped) == 12
    weighted = balance_train(train, test, ["a", "b", "c"], BalanceConfig(strategy="loss_weights"), seed=0)
    assert weighted.class_weights == {"a": 0.5, "b": 1.5, "c": 3.0}
    assert sum(weighted.class_weights[ex.label] for ex in train) == pytest.approx(len(train))


def test_oversampled_copies_keep_the_accounting_honest(tmp_path):
    write_classification_data(tmp_path / "data" / "train.jsonl")
    with (tmp_path / "data" / "train.jsonl").open("a") as fh:
        for i in range(20):
            fh.write(json.dumps({"text": f"what is the exchange rate number {i}", "label": "exchange_rate"}) + "\n")
    cfg = Config.model_validate({"data": {"dedup": {"near": False}, "balance": {"strategy": "oversample"}}})
    splits = prepare_splits(cfg, tmp_path)
    acc = splits.accounting()
    assert acc["oversampled"] > 0 and splits.balance["imbalance_ratio_after"] == 1.0
    assert acc["rows_read"] == acc["kept"] + acc["rejected"] + sum(acc["removed"].values())
    splits.save(tmp_path / "saved")
    assert Splits.load(tmp_path / "saved").accounting() == acc


def test_rows_waiting_for_review_stay_out_unless_included(tmp_path):
    write_classification_data(tmp_path / "data" / "train.jsonl")
    with (tmp_path / "data" / "train.jsonl").open("a") as fh:
        fh.write(json.dumps({"text": "my card never came", "label": "card_arrival", "needs_review": True}) + "\n")
        fh.write(json.dumps({"text": "card still missing", "label": "card_arrival", "needs_review": False}) + "\n")
    data = {"dedup": {"near": False}}
    splits = prepare_splits(Config.model_validate({"data": data}), tmp_path)
    assert splits.accounting()["removed"] == {"needs_review": 1}
    splits = prepare_splits(Config.model_validate({"data": {**data, "unreviewed": "include"}}), tmp_path)
    assert "needs_review" not in splits.accounting()["removed"]


def test_prepared_splits_are_used_as_they_are(tmp_path, tiny_tokenizer):
    write_classification_data(tmp_path / "data" / "train.jsonl")
    cfg = Config.model_validate({"data": {"dedup": {"near": False}}})
    splits = prepare_splits(cfg, tmp_path, tokenizer=tiny_tokenizer)
    splits.save(tmp_path / "prepared")
    again = prepare_splits(Config.model_validate({"data": {"prepared": "prepared", "train": "missing.jsonl"}}), tmp_path)
    assert again.data_hash() == splits.data_hash() and again.manifest() == {**splits.manifest()}
    with pytest.raises(DataError, match="manifest.json missing"):
        prepare_splits(Config.model_validate({"data": {"prepared": "nowhere"}}), tmp_path)


def test_same_inputs_same_hash(tmp_path):
    write_classification_data(tmp_path / "data" / "train.jsonl")
    cfg = Config.model_validate({"data": {"dedup": {"near": False}}})
    assert prepare_splits(cfg, tmp_path).data_hash() == prepare_splits(cfg, tmp_path).data_hash()
    other = Config.model_validate({"data": {"dedup": {"near": False}}, "project": {"seed": 7}})
    assert prepare_splits(other, tmp_path).data_hash() != prepare_splits(cfg, tmp_path).data_hash()


def test_labels_spelt_two_ways_are_flagged_with_their_counts():
    from tunesmith.data.balance import similar_labels

    (warning,) = similar_labels({"Shipping": 12, "shiping": 1, "returns": 9})
    assert "'Shipping' (12 training and test examples) and 'shiping' (1)" in warning
    assert similar_labels({"refund": 3, "Refund ": 2}) != []  # case and spacing alone
    assert similar_labels({"level_1": 5, "level_2": 5, "card_arrival": 4, "card_delivery_estimate": 4}) == []
