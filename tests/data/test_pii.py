"""PII detection measured on a labelled set, redaction, and the policies."""

import json
from collections import Counter
from pathlib import Path

import pytest

from tunesmith.config import PiiConfig
from tunesmith.data.examples import Example
from tunesmith.data.pii import PII_TYPES, Span, find_pii, redact
from tunesmith.data.quality import scrub_pii
from tunesmith.errors import DataError

LABELLED = Path(__file__).parent / "fixtures" / "pii_labelled.jsonl"  # made by scripts/make_pii_testset.py


def test_precision_and_recall_on_the_labelled_set():
    rows = [json.loads(line) for line in LABELLED.read_text().splitlines()]
    tp, fp, fn = Counter(), Counter(), Counter()
    for r in rows:
        gold = {(e["type"], e["value"]) for e in r["entities"]}
        pred = {(s.type, s.value) for s in find_pii(r["text"])}
        for kind, _ in pred & gold:
            tp[kind] += 1
        for kind, _ in pred - gold:
            fp[kind] += 1
        for kind, _ in gold - pred:
            fn[kind] += 1
    total_tp, total_fp, total_fn = sum(tp.values()), sum(fp.values()), sum(fn.values())
    assert total_tp + total_fn >= 70 and sum(1 for r in rows if not r["entities"]) >= 15
    assert total_tp / (total_tp + total_fn) >= 0.95, (fn, tp)
    assert total_tp / (total_tp + total_fp) >= 0.9, (fp, tp)
    for kind in PII_TYPES:  # every type is present and found
        assert tp[kind] >= 1, kind


def test_redaction_uses_typed_placeholders():
    text = "Mail a.b@example.com or call +44 20 7946 0958; card 4111 1111 1111 1111."
    assert redact(text, find_pii(text)) == "Mail <EMAIL> or call <PHONE>; card <CARD>."


@pytest.mark.parametrize("policy, kept, removed, prompt", [
    ("redact", 2, 0, "write to <EMAIL>"), ("drop", 1, 1, None), ("report", 2, 0, "write to x@example.com"), ("off", 2, 0, None),
])
def test_policies(policy, kept, removed, prompt):
    rows = [Example(id="1", prompt="write to x@example.com", target="ok"), Example(id="2", prompt="hello", target="hi")]
    out, dropped, counts = scrub_pii(rows, PiiConfig(policy=policy), "train")
    assert (len(out), len(dropped)) == (kept, removed)
    if prompt:
        assert out[0].prompt == prompt
    assert counts == (Counter() if policy == "off" else Counter({"EMAIL": 1}))
    assert all(r.rule == "pii" for r in dropped)


def test_named_entities_merge_with_patterns_without_overlap():
    text = "Ask Jane Doe at jane@example.com in Leeds."

    def ner(t):  # a stand-in for an NER model's output on this sentence
        return [Span("PERSON", 4, 12, "Jane Doe"), Span("PERSON", 16, 20, "jane"), Span("LOCATION", 36, 41, "Leeds")]

    spans = find_pii(text, ner=ner)
    assert [(s.type, s.value) for s in spans] == [("PERSON", "Jane Doe"), ("EMAIL", "jane@example.com"), ("LOCATION", "Leeds")]
    assert redact(text, spans) == "Ask <PERSON> at <EMAIL> in <LOCATION>."
    assert [s.type for s in find_pii(text, types=["EMAIL", "PERSON"], ner=ner)] == ["PERSON", "EMAIL"]


def test_presidio_backend_missing_is_a_clear_error():
    try:
        import presidio_analyzer  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("presidio is installed here")
    with pytest.raises(DataError, match="presidio-analyzer is not installed"):
        scrub_pii([Example(id="1", prompt="hi", target="x")], PiiConfig(ner="presidio"), "train")


@pytest.mark.parametrize(("text", "found"), [
    ("My contact: 16.239.210.187.", [("IP", "16.239.210.187")]),             # an address ending a sentence
    ("Servers 10.0.0.1, 10.0.0.2; and 192.168.1.20!", [("IP", "10.0.0.1"), ("IP", "10.0.0.2"),
                                                        ("IP", "192.168.1.20")]),
    ("(8.8.8.8) answered", [("IP", "8.8.8.8")]),
    ("Version 1.2.3.4.5 is not an address", []),
    ("How much gold did Victoria produce in the years of 1851-1860?", []),  # a range of years, not a phone
    ("Call 555-0142 or 020 7946 0018.", [("PHONE", "555-0142"), ("PHONE", "020 7946 0018")]),
])
def test_addresses_at_punctuation_and_year_ranges(text, found):
    assert [(s.type, s.value) for s in find_pii(text)] == found
