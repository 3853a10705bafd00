"""The next data version: what joins, what is held out, what is set aside and why; every row accounted for."""

from __future__ import annotations

import json

import pytest

from tunesmith.config import DedupConfig
from tunesmith.data.examples import Example
from tunesmith.data.prepare import Splits, load_examples
from tunesmith.data.versions import next_data_version
from tunesmith.errors import DataError


def ex(i: str, text: str, label: str) -> Example:
    return Example(id=i, prompt=text, target=label, label=label)


@pytest.fixture()
def base() -> Splits:
    train = [ex(f"t{i}", f"where is my card number {i} please", "card_arrival") for i in range(10)]
    train += [ex(f"p{i}", f"my pin {i} is blocked again today", "pin_blocked") for i in range(10)]
    return Splits(train, [ex("v1", "card not here yet", "card_arrival")],
                  [ex("x1", "has my new card been posted", "card_arrival"), ex("x2", "unblock the pin", "pin_blocked")],
                  "text_label", ["card_arrival", "pin_blocked"], "Classify: {labels}")


def chat(text: str, answer: str, **more) -> str:
    return json.dumps({"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": answer}],
                       **more})


def test_rows_join_are_held_out_or_set_aside_with_reasons(tmp_path, base):
    new = tmp_path / "reviewed.jsonl"
    rows = [chat(f"what exchange rate do you use for currency {c}", "exchange_rate", needs_review=False)
            for c in "abcdefghij"]
    rows += [chat("where is my card number 3 please", "card_arrival"),  # repeats a training row
             chat("has my new card been posted", "card_arrival"),  # repeats a frozen test input
             chat("is the rate fair", "exchange_rate", needs_review=True),  # still waiting for review
             "{not json"]
    new.write_text("\n".join(rows) + "\n")
    v = next_data_version(base, [new], fresh_fraction=0.3, dedup=DedupConfig(near=False), seed=0)
    c = v.changes
    assert c["rows_read"] == 14 and c["set_aside_on_reading"] == 2  # the unreviewed row and the broken line
    assert c["rows_read"] == (c["set_aside_on_reading"] + c["held_out_as_fresh_test"] + c["joined_training"]
                              + sum(c["set_aside"].values()))
    reasons = {a["reason"] for a in v.set_aside}
    assert "needs_review: still waiting for review" in reasons
    assert any(r.startswith("malformed JSON") or "JSON" in r for r in reasons)
    # The held-out share is taken per label: exchange_rate has rows on both sides.
    fresh_labels = {e.label for e in v.fresh_test}
    assert "exchange_rate" in fresh_labels and any(e.label == "exchange_rate" for e in v.train[len(base.train):])
    # Nothing that joined training repeats a test input; the frozen sets are the production run's.
    test_inputs = {e.prompt for e in [*v.frozen_test, *v.fresh_test]}
    assert not any(e.prompt in test_inputs for e in v.train)
    assert v.frozen_test == base.test and v.validation == base.validation
    assert v.labels == ["card_arrival", "pin_blocked", "exchange_rate"] and c["new_labels"] == ["exchange_rate"]
    # Written files are read back by the data step's own reader, row for row.
    files = v.write(tmp_path / "v")
    for name, part in (("train", v.train), ("test", v.frozen_test), ("fresh_test", v.fresh_test)):
        loaded = load_examples(files[name], "auto", {})
        assert [e.prompt for e in loaded.examples] == [e.prompt for e in part] and not loaded.rejected
        assert [e.label for e in loaded.examples] == [e.label for e in part]
    assert json.loads(files["changes"].read_text())["version"] == v.version
    again = next_data_version(base, [new], fresh_fraction=0.3, dedup=DedupConfig(near=False), seed=0)
    assert again.version == v.version  # seeded: the same version from the same inputs


def test_no_usable_rows_is_a_clear_error(tmp_path, base):
    new = tmp_path / "pending.jsonl"
    new.write_text(chat("is the rate fair", "exchange_rate", needs_review=True) + "\n")
    with pytest.raises(DataError, match="no reviewed rows to add"):
        next_data_version(base, [new], fresh_fraction=0.3, dedup=DedupConfig())
    with pytest.raises(DataError, match="file not found"):
        next_data_version(base, [tmp_path / "missing.jsonl"], fresh_fraction=0.3, dedup=DedupConfig())
