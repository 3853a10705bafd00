"""Reading files and rows: formats, detection, and errors that name file, line and field."""

import json

import pytest

from tunesmith.data.formats import FORMATS, detect_format, row_to_example
from tunesmith.data.io import read_rows
from tunesmith.data.prepare import load_examples
from tunesmith.errors import DataError


@pytest.mark.parametrize(
    "fmt, row, prompt, target, label",
    [
        ("text_label", {"text": "hi", "label": "greet"}, "hi", "greet", "greet"),
        ("prompt_response", {"prompt": "p", "response": "r", "system": "s"}, "p", "r", None),
        ("qa", {"question": "q?", "answer": "a", "context": "c"}, "Context: c\n\nQuestion: q?", "a", None),
        ("qa", {"question": "q?", "answer": "a"}, "q?", "a", None),
        ("document_summary", {"document": "d", "summary": "s"}, "d", "s", None),
    ],
)
def test_each_format_builds_examples(fmt, row, prompt, target, label):
    assert detect_format(set(row), {}) == fmt
    ex = row_to_example(FORMATS[fmt], row, {}, path="f.jsonl", line=3)
    assert (ex.prompt, ex.target, ex.label, ex.id) == (prompt, target, label, "f.jsonl:3")


def test_column_mapping():
    row = {"utterance": "hello", "intent": "greet", "extra": 1}
    assert detect_format(set(row), {"text": "utterance", "label": "intent"}) == "text_label"
    ex = row_to_example(FORMATS["text_label"], row, {"text": "utterance", "label": "intent"}, path="f", line=1)
    assert ex.prompt == "hello" and ex.label == "greet" and ex.meta == {"extra": 1}


def test_undetectable_format_lists_the_shapes():
    with pytest.raises(DataError, match="cannot tell the data format.*text_label: text, label"):
        detect_format({"foo", "bar"}, {})


def test_malformed_jsonl_line_is_named(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "a", "label": "x"}\n\n{"text": "b", "label": \n')
    with pytest.raises(DataError) as err:
        list(read_rows(p))
    assert f"{p}:3: malformed JSON" in str(err.value)


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"text": "a", "label": "x"}, {"text": "b"}], "d.jsonl:2: field 'label': missing required field"),
        ([{"text": "a", "label": "x"}, {"text": " ", "label": "y"}], "d.jsonl:2: field 'text': empty value"),
        ([{"text": "a", "label": "x"}, {"text": ["b"], "label": "y"}], "d.jsonl:2: field 'text': expected a string, got list"),
    ],
)
def test_invalid_rows_name_file_line_and_field(tmp_path, rows, message):
    p = tmp_path / "d.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as err:
        load_examples(p, "auto", {})
    assert str(err.value).endswith(message.split(":", 1)[1]) and str(p) in str(err.value)


def test_csv_and_json_array_and_bom(tmp_path):
    csv_path = tmp_path / "d.csv"
    csv_path.write_bytes('\ufefftext,label\r\n"hello, you",greet\r\nbye,leave\r\n'.encode())
    examples, fmt = load_examples(csv_path, "auto", {})
    assert fmt == "text_label" and [e.prompt for e in examples] == ["hello, you", "bye"]
    assert examples[1].id == "d.csv:3"
    arr = tmp_path / "d.json"
    arr.write_text(json.dumps([{"prompt": "p", "response": "r"}]))
    assert load_examples(arr, "auto", {})[1] == "prompt_response"


def test_csv_row_with_too_many_values(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("text,label\na,b\nc,d,e\n")
    with pytest.raises(DataError, match=r"d.csv:3: more values"):
        load_examples(p, "auto", {})


@pytest.mark.parametrize("name, content, message", [
    ("empty.jsonl", "", "holds no rows"), ("x.txt", "a", "unsupported file type"), ("arr.jsonl", "[1, 2]\n", "expected a JSON object"),
])
def test_unusable_files(tmp_path, name, content, message):
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(DataError, match=message):
        list(read_rows(p))
    with pytest.raises(DataError, match="file not found"):
        list(read_rows(tmp_path / "missing.jsonl"))
