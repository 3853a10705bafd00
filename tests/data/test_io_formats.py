"""Reading files and rows: formats, detection, and errors that name file, line and field."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tunesmith.data.formats import FORMATS, detect_format, row_to_example
from tunesmith.data import io as io_mod
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
        ("alpaca", {"instruction": "i", "input": "x", "output": "o"}, "i\n\nx", "o", None),
        ("alpaca", {"instruction": "i", "input": "", "output": "o"}, "i", "o", None),
        ("text", {"text": "one two three four five"}, "one two", "three four five", None),
    ],
)
def test_each_format_builds_examples(fmt, row, prompt, target, label):
    assert detect_format(set(row), {}) == fmt
    ex = row_to_example(FORMATS[fmt], row, {}, path="f.jsonl", line=3)
    assert (ex.prompt, ex.target, ex.label, ex.id) == (prompt, target, label, "f.jsonl:3")


@pytest.mark.parametrize("fmt, row", [
    ("messages", {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "a"},
                               {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"},
                               {"role": "assistant", "content": "d"}]}),
    ("sharegpt", {"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "a"},
                                    {"from": "gpt", "value": "b"}, {"from": "human", "value": "c"},
                                    {"from": "gpt", "value": "d"}]}),
])
def test_chat_formats_keep_every_turn(fmt, row):
    assert detect_format(set(row), {}) == fmt
    ex = row_to_example(FORMATS[fmt], row, {}, path="f.jsonl", line=1)
    assert (ex.prompt, ex.target, ex.system) == ("c", "d", "S")
    assert [t["role"] for t in ex.turns] == ["user", "assistant", "user", "assistant"]


@pytest.mark.parametrize("turns, message", [
    ("hello", "expected a non-empty list of turns"),
    ([{"role": "robot", "content": "x"}], "turn 1: unknown role 'robot'"),
    ([{"role": "user", "content": ""}], "turn 1: 'content' must be a non-empty string"),
    ([{"role": "user", "content": "a"}], "must end with a user turn answered by an assistant turn"),
])
def test_bad_conversations_name_the_turn(turns, message):
    with pytest.raises(DataError, match=message) as err:
        row_to_example(FORMATS["messages"], {"messages": turns}, {}, path="f.jsonl", line=7)
    assert "f.jsonl:7: field 'messages'" in str(err.value)


def test_column_mapping():
    row = {"utterance": "hello", "intent": "greet", "extra": 1}
    assert detect_format(set(row), {"text": "utterance", "label": "intent"}) == "text_label"
    ex = row_to_example(FORMATS["text_label"], row, {"text": "utterance", "label": "intent"}, path="f", line=1)
    assert ex.prompt == "hello" and ex.label == "greet" and ex.meta == {"extra": 1}


def test_undetectable_format_lists_the_shapes():
    with pytest.raises(DataError, match="cannot tell the data format.*text_label: text, label"):
        detect_format({"foo", "bar"}, {})


def test_every_line_is_kept_or_set_aside_with_its_reason(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(
        b'\xef\xbb\xbf{"text": "bom first line", "label": "x"}\r\n'  # BOM and CRLF are fine
        b'\n'                                                         # blank lines are not rows
        b'{"text": "b", "label": \n'                                   # 3: malformed JSON
        b'[1, 2]\n'                                                    # 4: not an object
        b'{"text": "caf\xe9", "label": "x"}\n'                          # 5: invalid UTF-8
        b'{"text": "c"}\n'                                             # 6: missing field
        b'{"text": "  ", "label": "x"}\n'                               # 7: empty value
        b'{"text": ["c"], "label": "x"}\n'                             # 8: wrong type
        b'{"text": "fine", "label": 3}\n'                              # 9: a numeric label is a label
    )
    loaded = load_examples(p, "auto", {})
    assert [e.prompt for e in loaded.examples] == ["bom first line", "fine"]
    assert loaded.examples[1].label == "3" and loaded.examples[0].line == 1
    got = {(r.line, r.kind) for r in loaded.rejected}
    assert got == {(3, "malformed JSON"), (4, "not a JSON object"), (5, "invalid UTF-8"),
                   (6, "field 'label': missing required field"), (7, "field 'text': empty value"),
                   (8, "field 'text': expected a string, got list")}
    assert loaded.rows_read == len(loaded.examples) + len(loaded.rejected) == 8
    assert all(r.source == str(p) and r.raw for r in loaded.rejected)


def test_an_oversized_line_is_set_aside_and_reading_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(io_mod, "MAX_LINE_BYTES", 1000)
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"text": "x" * 5000, "label": "a"}) + "\n" + json.dumps({"text": "ok", "label": "a"}) + "\n")
    loaded = load_examples(p, "auto", {})
    assert [e.prompt for e in loaded.examples] == ["ok"]
    assert loaded.rejected[0].kind == "line too long" and loaded.rejected[0].line == 1
    assert len(loaded.rejected[0].raw) <= io_mod.MAX_RAW_CHARS


def test_csv_tsv_gzip_json_array_and_folders(tmp_path):
    csv_path = tmp_path / "d.csv"
    csv_path.write_bytes('\ufefftext,label\r\n"hello, you",greet\r\nbye,leave\r\nc,d,e\r\n'.encode())
    loaded = load_examples(csv_path, "auto", {})
    assert loaded.format == "text_label" and [e.prompt for e in loaded.examples] == ["hello, you", "bye"]
    assert loaded.examples[1].id == "d.csv:3"
    assert [(r.line, r.kind) for r in loaded.rejected] == [(4, "wrong number of values")]
    tsv = tmp_path / "folder" / "a.tsv.gz"
    tsv.parent.mkdir()
    with gzip.open(tsv, "wt") as fh:
        fh.write("text\tlabel\nhi\tgreet\n")
    (tmp_path / "folder" / "b.json").write_text(json.dumps([{"text": "yo", "label": "greet"}, 5]))
    (tmp_path / "folder" / "empty.jsonl").write_text("")
    pq.write_table(pa.table({"text": ["pq row"], "label": ["greet"], "extra": [1]}), tmp_path / "folder" / "c.parquet")
    folder = load_examples(tmp_path / "folder", "auto", {})
    assert sorted(e.prompt for e in folder.examples) == ["hi", "pq row", "yo"]
    assert [r.kind for r in folder.rejected] == ["not a JSON object"]
    assert len(folder.sources) == 4 and any("holds no rows" in w for w in folder.warnings)


def test_undetectable_file_is_an_error_naming_the_first_row(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"foo": 1}\n')
    with pytest.raises(DataError, match=r"d.jsonl:1: cannot tell the data format"):
        load_examples(p, "auto", {})


@pytest.mark.parametrize("name, message", [("x.txt", "unsupported file type"), ("missing.jsonl", "file not found")])
def test_unusable_paths(tmp_path, name, message):
    if name == "x.txt":
        (tmp_path / name).write_text("a")
    with pytest.raises(DataError, match=message):
        load_examples(tmp_path / name, "auto", {})


def test_plain_text_is_detected_and_text_with_label_stays_labelled():
    assert detect_format({"text"}, {}) == "text"
    assert detect_format({"text", "label"}, {}) == "text_label"
    ex = row_to_example(FORMATS["text"], {"text": "The quick brown fox"}, {}, path="f.jsonl", line=1)
    assert ex.plain and ex.prompt + " " + ex.target == "The quick brown fox"
