"""Cleaning, duplicates, conflicts and leakage."""

import pytest

from tunesmith.config import CleanConfig, DedupConfig
from tunesmith.data.examples import Example
from tunesmith.data.quality import clean_example, clean_text, deduplicate, find_leakage


@pytest.mark.parametrize("cfg, text, expected", [
    (CleanConfig(), "Cafe\u0301\u200b  is\t open\r\n\r\n\r\n\r\nnow ", "Café is open\n\nnow"),
    (CleanConfig(lowercase=True), "Hello WORLD", "hello world"),
    (CleanConfig(remove_citations=True), "As shown [1], and again [2, 3].", "As shown, and again."),
    (CleanConfig(remove_patterns=[r"^--\s*\nSent from my phone$"]), "Help me\n-- \nSent from my phone", "Help me"),
    (CleanConfig(unicode_nfc=False, strip_control=False, whitespace=False), " a\u200b  b ", " a\u200b  b "),
])
def test_clean_text(cfg, text, expected):
    assert clean_text(text, cfg) == expected


def test_invalid_pattern_is_a_config_error():
    with pytest.raises(ValueError, match=r"remove_patterns\[0\]"):
        CleanConfig(remove_patterns=["("])


def test_labels_are_not_cleaned():
    ex = Example(id="1", prompt="  Hi  there ", target="Card_Arrival ", label="Card_Arrival ")
    out = clean_example(ex, CleanConfig(lowercase=True))
    assert out.prompt == "hi there" and out.target == "Card_Arrival " and out.label == "Card_Arrival "


def ex(i, prompt, target="a"):
    return Example(id=str(i), prompt=prompt, target=target)


def test_exact_and_near_duplicates_keep_the_first():
    # rows 1 and 3 share 92% of their shingles (threshold 0.85)
    long = "Where is my new card? I ordered it two weeks ago, the app says it was shipped, and it has still not arrived at my home"
    rows = [ex(1, long + "."), ex(2, long.lower() + "!!"), ex(3, long + " yet."), ex(4, "How do I change my PIN?")]
    kept, removed, conflicts = deduplicate(rows, DedupConfig(), "train")
    assert [e.id for e in kept] == ["1", "4"]
    assert {(r.id, r.rule, r.kept_id) for r in removed} == {("2", "duplicate_exact", "1"), ("3", "duplicate_near", "1")}
    assert conflicts == 0
    kept, removed, _ = deduplicate(rows, DedupConfig(near=False), "train")
    assert [e.id for e in kept] == ["1", "3", "4"]


def test_conflicting_answers_are_flagged_and_optionally_dropped():
    rows = [ex(1, "Cancel my transfer", "cancel_transfer"), ex(2, "cancel my transfer!", "terminate_account"), ex(3, "Hi")]
    kept, removed, conflicts = deduplicate(rows, DedupConfig(near=False), "train")
    assert conflicts == 1 and len(kept) == 3 and not removed
    kept, removed, conflicts = deduplicate(rows, DedupConfig(near=False, conflicts="drop"), "train")
    assert [e.id for e in kept] == ["3"] and {r.rule for r in removed} == {"conflict"}


def test_leakage_is_removed_from_evaluation_splits():
    train = [ex(1, "I lost my phone and need to block my account"), ex(2, "What is the exchange rate for dollars?")]
    test = [ex(3, "I lost my phone and need to block my account!"), ex(4, "How old do I need to be to open an account?")]
    found = find_leakage(train, {"validation": [], "test": test}, DedupConfig())
    kept, removed = found["test"]
    assert [e.id for e in kept] == ["4"]
    assert [(r.id, r.rule, r.kept_id, r.split) for r in removed] == [("3", "leakage", "1", "test")]
    assert found["validation"] == ([], [])
