"""Fuzzing the readers and the PII scrubber (hypothesis), and the scrubber's precision on real, PII-free prose.

The readers must turn any bytes into rows or set-aside records with a reason, never a traceback;
the scrubber must find planted values at every punctuation boundary and leave real prose alone.
"""

import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunesmith.config import PiiConfig
from tunesmith.data.io import read_records
from tunesmith.data.pii import find_pii, redact

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-10**30, max_value=10**30) | st.floats(allow_nan=True)
    | st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30)


def _check(records, expected_lines=None):
    for r in records:
        assert (r.row is None) != (r.error is None), r  # a row, or a reason it is not one
        assert r.row is None or isinstance(r.row, dict)
        assert isinstance(r.raw, str)
    if expected_lines is not None:
        assert [r.line for r in records] == expected_lines


@FUZZ
@given(lines=st.lists(st.binary(max_size=200), min_size=1, max_size=12))
def test_any_bytes_as_jsonl_are_rows_or_reasons(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("fuzz") / "data.jsonl"
    lines = [line.replace(b"\n", b" ").replace(b"\r", b" ") for line in lines]
    path.write_bytes(b"\n".join(lines) + b"\n")
    records = list(read_records(path))
    # every non-blank line is one record, numbered as the file numbers it
    nonblank = [i for i, line in enumerate(lines, start=1)
                if line.strip(b" \t\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0") or not _blank_text(line)]
    _check(records)
    assert {r.line for r in records} <= set(range(1, len(lines) + 1))
    assert len(records) <= len(nonblank)


def _blank_text(line: bytes) -> bool:
    try:
        return not line.decode("utf-8").strip()
    except UnicodeDecodeError:
        return False


@FUZZ
@given(values=st.lists(json_values, min_size=1, max_size=8), depth=st.integers(0, 3000))
def test_any_json_values_and_deep_nesting_are_rows_or_reasons(tmp_path_factory, values, depth):
    path = tmp_path_factory.mktemp("fuzz") / "data.jsonl"
    lines = [json.dumps(v, ensure_ascii=False) for v in values] + ["[" * depth + "]" * depth or "[]"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    records = list(read_records(path))
    _check(records, expected_lines=list(range(1, len(lines) + 1)))
    for r, v in zip(records, values):
        assert (r.row is not None) == (isinstance(v, dict) and not _has_lone_surrogate(v))


def _has_lone_surrogate(value) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(map(_has_lone_surrogate, value))
    return False


@FUZZ
@given(cells=st.lists(st.lists(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r"), max_size=30),
                                min_size=1, max_size=4), min_size=1, max_size=8))
def test_any_csv_is_rows_or_reasons_with_the_raw_record(tmp_path_factory, cells):
    import csv as csv_module
    import io
    path = tmp_path_factory.mktemp("fuzz") / "data.csv"
    buf = io.StringIO()
    writer = csv_module.writer(buf, lineterminator="\n")
    writer.writerow(["text", "label"])
    for row in cells:
        writer.writerow(row)
    path.write_text(buf.getvalue(), encoding="utf-8")
    records = list(read_records(path))
    _check(records)
    for r in records:
        assert r.raw in buf.getvalue()  # the record as written, quotes and line breaks included


# ---- the scrubber

PLANTED = {
    "IP": ["16.239.210.187", "192.0.2.44", "2001:db8::8a2e:370:7334"],
    "EMAIL": ["jane.doe@example.org", "support+ticket@mail.example.co.uk"],
    "PHONE": ["+44 20 7946 0018", "(555) 014-2278", "+1 415 555 2671"],
    "IBAN": ["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000"],
    "CARD": ["4111 1111 1111 1111", "5500-0000-0000-0004"],
}
BOUNDARIES = list(".,;:!?)]}'\"") + ["", " ", "\n", "...", ".\n", "—", "…"]


@FUZZ
@given(kind=st.sampled_from(sorted(PLANTED)), index=st.integers(0, 2), before=st.sampled_from([" ", " (", " [", " \"", ": ", ":\n", " <"]),
       after=st.sampled_from(BOUNDARIES),
       words=st.text(alphabet=string.ascii_letters + " ", max_size=30))
def test_planted_values_are_found_at_every_punctuation_boundary(kind, index, before, after, words):
    value = PLANTED[kind][index % len(PLANTED[kind])]
    text = f"{words} My contact{before}{value}{after} thanks"
    spans = find_pii(text, PiiConfig().types, None)
    at = text.index(value)
    # found (a span may take in letters glued to it: "contactjane.doe@..." is that whole address) and redacted
    assert any(sp.type == kind and sp.start <= at and sp.end >= at + len(value) for sp in spans), (text, spans)
    assert value not in redact(text, spans)


@FUZZ
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_the_scrubber_never_crashes_and_redaction_keeps_the_rest(text):
    spans = find_pii(text, PiiConfig().types, None)
    for sp in spans:
        assert 0 <= sp.start < sp.end <= len(text)
    out = redact(text, spans)
    if not spans:
        assert out == text


def test_precision_on_real_prose_without_personal_data():
    """Python's own language reference (465k characters of real prose with many numbers, shipped with Python):
    apart from one number layout in a code example, the scrubber flags nothing."""
    from pydoc_data.topics import topics
    text = "\n".join(topics.values())
    found = [(sp.type, text[sp.start:sp.end]) for sp in find_pii(text, PiiConfig().types, None)]
    assert len(found) <= 1, found


@pytest.mark.parametrize("text", [
    "How much gold did Victoria produce in the years of 1851-1860?",
    "The war lasted from 1914 to 1918 (1914-1918), and the census of 1921 counted 4,357,800 people.",
    "Version 3.11.7 was released; see section 4.2.1.5 and ISBN 978-0-306-40615-7.",
    "The temperature fell to -3.140000 and rose to +3.140000 by noon.",
    "Coordinates 51.5074, -0.1278; population density 5,701 per km2; 2019-2020 season.",
])
def test_encyclopedic_numbers_are_not_personal_data(text):
    assert find_pii(text, PiiConfig().types, None) == []
