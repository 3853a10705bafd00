"""A corpus of hostile rows: every one is read or set aside with a reason, none crashes the data check."""

import json

from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.data.io import read_records

GOOD = [json.dumps({"text": f"how do I reset my pin number {i}", "label": "pin"}) for i in range(6)] + \
    [json.dumps({"text": f"what is the exchange rate for {c}", "label": "rate"}) for c in "abcdef"]
HOSTILE = {  # raw line -> the reason it is set aside (None: it is read)
    "[" * 5000 + "]" * 5000: "nested too deeply",
    '{"text": ' + "[" * 3000 + "]" * 3000 + ', "label": "pin"}': "nested too deeply",
    '{"text": "big", "label": ' + "9" * 100000 + "}": "a value Python cannot read",
    '{"text": "half \\ud800 surrogate", "label": "rate"}': "unpaired surrogate",
    '{"text": "a pair \\ud83d\\ude00 is fine", "label": "rate"}': None,
    '{"text": "overflow", "label": 1e999999}': None,  # read; the label is then not a string
    '{"text": "nul \\u0000 escaped", "label": "pin"}': None,
    '"just a string"': "not a JSON object",
    "null": "not a JSON object",
    '{"text": 123, "label": "pin"}': None,
    '{"text": "", "label": "pin"}': None,
}


def test_each_hostile_line_is_read_or_set_aside_with_its_reason(tmp_path):
    path = tmp_path / "bad.jsonl"
    lines = list(HOSTILE)
    path.write_bytes(b"".join(line.encode() + b"\n" for line in lines) + b'{"text": "caf\xe9"}\n' + b'{"t": "\x00"}\n')
    records = list(read_records(path))
    assert len(records) == len(lines) + 2
    for record, line in zip(records, lines):
        expected = HOSTILE[line]
        if expected is None:
            assert record.row is not None, (line[:60], record.error)
        else:
            assert record.row is None and expected in record.error, (line[:60], record.error)
    assert "UTF-8" in records[-2].error and "Invalid control character" in records[-1].error  # a raw NUL byte


def test_data_check_ends_cleanly_and_counts_add_up(tmp_path):
    path = tmp_path / "bad.jsonl"
    body = GOOD[:6] + list(HOSTILE) + GOOD[6:]
    path.write_bytes(b"".join(line.encode() + b"\n" for line in body) + b'{"text": "caf\xe9", "label": "rate"}\n')
    res = CliRunner().invoke(app, ["data", "check", str(path), "--no-tokens", "--json", "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert s["rows_read"] == len(body) + 1 and s["adds_up"]
    assert sum(s["rejected"].values()) >= 7  # six set aside by the reader, the latin-1 line, then field checks


def test_a_set_aside_csv_record_keeps_its_raw_text_as_read(tmp_path):
    from tunesmith.data.io import read_records
    path = tmp_path / "tickets.csv"
    path.write_text('text,label\n"a ""quoted"", multi\nline text",card\n"only one value"\n', encoding="utf-8")
    good, bad = list(read_records(path))
    assert good.row == {"text": 'a "quoted", multi\nline text', "label": "card"}
    assert good.raw == '"a ""quoted"", multi\nline text",card' and good.line == 2
    assert bad.error.startswith("wrong number of values") and bad.raw == '"only one value"' and bad.line == 4
