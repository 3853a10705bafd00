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


PASSAGES = [
    "The Victorian gold rush began in 1851 when gold was found near Ballarat and Bendigo. Within a decade the colony's "
    "population grew sevenfold, and Melbourne became one of the richest cities in the world.",
    "Photosynthesis takes place in the chloroplasts of plant cells. Light energy splits water molecules, releasing "
    "oxygen, and the energy is stored as sugar made from carbon dioxide.",
    "The Danube flows for about 2,850 kilometres from the Black Forest in Germany to the Black Sea, passing through "
    "ten countries and four capital cities, including Vienna and Budapest.",
]
QUESTIONS = [
    [("When did the Victorian gold rush begin?", "1851"), ("Where was gold found?", "near Ballarat and Bendigo"),
     ("Which city became one of the richest in the world?", "Melbourne")],
    [("Where does photosynthesis take place?", "in the chloroplasts"), ("What does light energy split?", "water molecules"),
     ("What is the energy stored as?", "sugar")],
    [("How long is the Danube?", "about 2,850 kilometres"), ("Where does the Danube end?", "the Black Sea"),
     ("How many countries does it pass through?", "ten")],
]


def qa_rows(extra=()):
    """SQuAD-style examples: several questions per passage, through the qa format as a data file would give them."""
    from tunesmith.data.formats import FORMATS, row_to_example
    rows = [{"context": p, "question": q, "answer": a} for p, qs in zip(PASSAGES, QUESTIONS) for q, a in qs]
    rows += list(extra)
    return [row_to_example(FORMATS["qa"], r, {}, path="squad.jsonl", line=i + 1) for i, r in enumerate(rows)]


def test_questions_about_one_passage_are_not_duplicates_of_each_other():
    examples = qa_rows(extra=[
        {"context": PASSAGES[0], "question": "When did the Victorian gold rush begin??", "answer": "1851"},  # repeated
        {"context": PASSAGES[1], "question": "When did the Victorian gold rush begin?", "answer": "1851"},  # other passage
    ])
    kept, removed, conflicts = deduplicate(examples, DedupConfig(), "train")
    assert len(kept) == 10 and conflicts == 0
    assert [(r.rule, r.id, r.kept_id) for r in removed] == [("duplicate_exact", "squad.jsonl:10", "squad.jsonl:1")]
    # near duplicates too are the same question about the same passage only
    near = qa_rows(extra=[{"context": PASSAGES[2], "question": "How long is the river Danube?",
                           "answer": "about 2,850 kilometres"}])
    kept, removed, _ = deduplicate(near, DedupConfig(near_threshold=0.6), "train")
    assert [(r.rule, r.kept_id) for r in removed] == [("duplicate_near", "squad.jsonl:7")] and len(kept) == 9


def test_a_shared_system_prompt_or_instruction_does_not_make_duplicates():
    system = "You route banking messages. Answer with one label only, from: " + ", ".join(f"intent_{i}" for i in range(80))
    rows = [Example(id=str(i), prompt=text, target="x", system=system)
            for i, text in enumerate(["card not here", "change my pin", "rate for dollars", "close my account"])]
    kept, removed, _ = deduplicate(rows, DedupConfig(), "train")
    assert len(kept) == 4 and not removed
    from tunesmith.data.formats import FORMATS, row_to_example
    instruction = "Rewrite the following customer message in a formal register, keeping every fact it states."
    alpaca = [row_to_example(FORMATS["alpaca"], {"instruction": instruction, "input": text, "output": text.upper()}, {},
                             path="a.jsonl", line=i) for i, text in enumerate(["hi my card is late", "pin is blocked"])]
    assert len(deduplicate(alpaca, DedupConfig(), "train")[0]) == 2


def test_leakage_is_the_same_question_about_the_same_passage_and_shared_passages_are_counted():
    from tunesmith.data.quality import shared_passages
    examples = qa_rows()
    train, test = examples[:2] + examples[3:], [examples[2]]  # another question about a training passage
    test.append(qa_rows(extra=[{"context": PASSAGES[1], "question": "Where does photosynthesis take place?",
                                "answer": "in the chloroplasts"}])[-1])  # a training question repeated
    kept, leaked = find_leakage(train, {"test": test}, DedupConfig())["test"]
    assert [e.id for e in kept] == [examples[2].id] and [r.kept_id for r in leaked] == [examples[3].id]
    assert shared_passages(train, test) == 2


def test_qa_splits_keep_a_passages_questions_together():
    from tunesmith.data.split import split_examples
    examples = [e for k in range(10) for e in qa_rows()]  # 30 passages... with distinct ids per copy
    examples = [Example(**{**e.to_dict(), "id": f"{i}", "context": f"{e.context} ({i // 3})",
                           "prompt": e.prompt.replace(e.context, f"{e.context} ({i // 3})")})
                for i, e in enumerate(examples)]
    train, val, test = split_examples(examples, (0.8, 0.1, 0.1), seed=1, stratify=False, by_passage=True)
    assert len(train) + len(val) + len(test) == 90 and len(test) == 9 and len(val) == 9
    where = {}
    for name, part in (("train", train), ("val", val), ("test", test)):
        for e in part:
            assert where.setdefault(e.context, name) == name
