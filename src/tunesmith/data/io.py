"""Reading rows from JSONL, JSON-array and CSV/TSV files, with line numbers for every error."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tunesmith.errors import DataError


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, row)`` for every row of a data file.

    Line numbers are 1-based physical lines for JSONL and the record's first line for CSV.

    Args:
        path: A ``.jsonl``, ``.json`` (array of objects), ``.csv`` or ``.tsv`` file.

    Raises:
        DataError: The file is missing, empty, of an unknown type, or a row is malformed.
    """
    if not path.is_file():
        raise DataError("file not found", path=path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        yield from _read_jsonl(path)
    elif suffix == ".json":
        yield from _read_json_array(path)
    elif suffix in (".csv", ".tsv"):
        yield from _read_csv(path, "\t" if suffix == ".tsv" else ",")
    else:
        raise DataError(f"unsupported file type '{suffix}' (use .jsonl, .json, .csv or .tsv)", path=path)


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    seen = False
    with path.open(encoding="utf-8-sig", newline=None) as fh:
        for no, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(f"malformed JSON: {exc.msg} at column {exc.colno}", path=path, line=no) from None
            if not isinstance(row, dict):
                raise DataError(f"expected a JSON object, got {type(row).__name__}", path=path, line=no)
            seen = True
            yield no, row
    if not seen:
        raise DataError("the file holds no rows", path=path)


def _read_json_array(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise DataError(f"malformed JSON: {exc.msg} at column {exc.colno}", path=path, line=exc.lineno) from None
    if not isinstance(data, list) or not data:
        raise DataError("expected a non-empty JSON array of objects", path=path)
    for i, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise DataError(f"item {i}: expected a JSON object, got {type(row).__name__}", path=path)
        yield i, row


def _read_csv(path: Path, delimiter: str) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        if not reader.fieldnames:
            raise DataError("the file has no header row", path=path)
        seen = False
        start = reader.line_num + 1
        for row in reader:
            if None in row:
                raise DataError(f"more values than the {len(reader.fieldnames)} header columns", path=path, line=start)
            missing = [k for k, v in row.items() if v is None]
            if missing:
                raise DataError("fewer values than header columns", path=path, line=start, field=missing[0])
            seen = True
            yield start, dict(row)
            start = reader.line_num + 1
    if not seen:
        raise DataError("the file holds no rows", path=path)
