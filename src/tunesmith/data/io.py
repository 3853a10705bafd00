"""Reading records from data files without losing any: every line read is a row or a set-aside reason.

Supported: JSONL, JSON arrays, CSV/TSV, each optionally gzipped (``.jsonl.gz``), Parquet, and
folders of such files. A line that cannot be parsed (malformed JSON, invalid UTF-8, a line over the
size limit, a non-object) becomes a :class:`Record` with an ``error`` instead of stopping
the run; only problems with a whole file (missing, unsupported type) raise.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from tunesmith.errors import DataError

#: Lines longer than this are set aside unparsed (a runaway line would otherwise fill memory).
MAX_LINE_BYTES = 4 * 1024 * 1024
#: How much of a set-aside line's raw text is kept in ``rejected.jsonl``.
MAX_RAW_CHARS = 20_000


_SURROGATE = "an unpaired surrogate escape (such as \\ud800), which is not valid Unicode"


def _lone_surrogate(row: Any, text: str) -> bool:
    """Whether a parsed row holds half of a UTF-16 surrogate pair, which no file can be written with.

    Only a ``\\u`` escape in the JSON text can put one there (UTF-8 input cannot), so rows
    without such an escape are not checked.
    """
    if "\\ud" not in text.lower():
        return False
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _unreadable(exc: Exception) -> str:
    """Why valid-looking JSON could not be read: Python's parser stops at deep nesting and very long integers."""
    if isinstance(exc, RecursionError):
        return "nested too deeply to read (arrays or objects inside each other about a thousand levels down)"
    return f"a value Python cannot read ({str(exc).split(';')[0]})"

_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet")


@dataclass(frozen=True)
class Record:
    """One row of a data file, or the reason it could not be read.

    Attributes:
        source: The file it came from.
        line: 1-based line (JSONL, CSV record start) or item number (JSON array).
        row: The parsed row, or None when ``error`` is set.
        raw: The raw text (cut to ``MAX_RAW_CHARS``), kept for set-aside rows.
        error: Why the row could not be read, or None.
    """

    source: Path
    line: int
    row: dict[str, Any] | None
    raw: str = ""
    error: str | None = None


def _kind(path: Path) -> tuple[str, bool]:
    name = path.name.lower()
    gz = name.endswith(".gz")
    if gz:
        name = name[:-3]
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return suffix, gz
    raise DataError(f"unsupported file type (use {', '.join(_SUFFIXES)}, optionally .gz)", path=path)


def data_files(path: Path) -> list[Path]:
    """The data files at ``path``: the file itself, or the supported files in a folder, sorted.

    Raises:
        DataError: Nothing there, or a folder with no supported files.
    """
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
                       and p.name.lower().removesuffix(".gz").endswith(_SUFFIXES))
        if not files:
            raise DataError(f"the folder holds no data files ({', '.join(_SUFFIXES)})", path=path)
        return files
    if not path.is_file():
        raise DataError("file not found", path=path)
    _kind(path)
    return [path]


def _open_binary(path: Path, gz: bool) -> IO[bytes]:
    return gzip.open(path, "rb") if gz else path.open("rb")


def read_records(path: Path) -> Iterator[Record]:
    """Yield a :class:`Record` for every row of one data file, good or bad.

    Args:
        path: A data file.

    Raises:
        DataError: The file is missing, of an unsupported type, or not valid gzip.
    """
    suffix, gz = _kind(path)
    if not path.is_file():
        raise DataError("file not found", path=path)
    try:
        if suffix in (".jsonl", ".ndjson"):
            yield from _read_jsonl(path, gz)
        elif suffix == ".json":
            yield from _read_json_array(path, gz)
        elif suffix == ".parquet":
            yield from _read_parquet(path)
        else:
            yield from _read_csv(path, gz, "\t" if suffix == ".tsv" else ",")
    except (OSError, EOFError, gzip.BadGzipFile, pa.ArrowException) as exc:
        raise DataError(f"cannot read the file: {exc}", path=path) from exc


def _decode(raw: bytes, first: bool) -> tuple[str | None, str | None]:
    if first and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        return raw.decode("utf-8").rstrip("\r\n"), None
    except UnicodeDecodeError as exc:
        return None, f"invalid UTF-8: bad byte at offset {exc.start}"


def _read_jsonl(path: Path, gz: bool) -> Iterator[Record]:
    with _open_binary(path, gz) as fh:
        for no, raw in enumerate(iter(lambda: fh.readline(MAX_LINE_BYTES + 1), b""), start=1):
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                size = len(raw) + _skip_line(fh)
                yield Record(path, no, None, raw[:MAX_RAW_CHARS].decode("utf-8", "replace"),
                             f"line too long: {size:,} bytes, over the {MAX_LINE_BYTES:,}-byte limit")
                continue
            text, err = _decode(raw, no == 1)
            if err:
                yield Record(path, no, None, raw[:MAX_RAW_CHARS].decode("utf-8", "replace"), err)
                continue
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                yield Record(path, no, None, text[:MAX_RAW_CHARS], f"malformed JSON: {exc.msg} at column {exc.colno}")
                continue
            except (RecursionError, ValueError) as exc:  # nesting or numbers past what Python's parser reads
                yield Record(path, no, None, text[:MAX_RAW_CHARS], f"malformed JSON: {_unreadable(exc)}")
                continue
            if not isinstance(row, dict):
                yield Record(path, no, None, text[:MAX_RAW_CHARS], f"not a JSON object: got {type(row).__name__}")
                continue
            if _lone_surrogate(row, text):
                yield Record(path, no, None, text[:MAX_RAW_CHARS], f"malformed JSON: {_SURROGATE}")
                continue
            yield Record(path, no, row, text[:MAX_RAW_CHARS])


def _skip_line(fh: IO[bytes]) -> int:
    """Read to the end of an over-long line without keeping it; return the bytes skipped."""
    skipped = 0
    while True:
        chunk = fh.readline(MAX_LINE_BYTES)
        skipped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return skipped


def _read_json_array(path: Path, gz: bool) -> Iterator[Record]:
    with _open_binary(path, gz) as fh:
        data = fh.read()
    text, err = _decode(data, True)
    if err:
        raise DataError(f"the file is not UTF-8 ({err})", path=path)
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"malformed JSON: {exc.msg} at column {exc.colno}", path=path, line=exc.lineno) from None
    except (RecursionError, ValueError) as exc:
        raise DataError(f"malformed JSON: {_unreadable(exc)}", path=path) from None
    if not isinstance(items, list):
        raise DataError("expected a JSON array of objects", path=path)
    for i, row in enumerate(items, start=1):
        if _lone_surrogate(row, text):
            yield Record(path, i, None, json.dumps(row)[:MAX_RAW_CHARS], f"malformed JSON: {_SURROGATE}")
            continue
        raw = json.dumps(row, ensure_ascii=False)[:MAX_RAW_CHARS]
        if isinstance(row, dict):
            yield Record(path, i, row, raw)
        else:
            yield Record(path, i, None, raw, f"not a JSON object: item {i} is {type(row).__name__}")


def _read_csv(path: Path, gz: bool, delimiter: str) -> Iterator[Record]:
    with _open_binary(path, gz) as bfh:
        data = bfh.read()
    text, err = _decode(data, True)
    if err:
        # Decode what can be decoded; rows holding the bad bytes are set aside below.
        text = data.removeprefix(codecs.BOM_UTF8).decode("utf-8", "replace")
    # The physical lines as the csv reader sees them, so that a set-aside record keeps its raw text as read
    # (quotes, and every line of a value that spans lines, included).
    lines = io.StringIO(text, newline="").readlines()
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    if not reader.fieldnames:
        return
    width = len(reader.fieldnames)
    start = reader.line_num + 1
    for row in reader:
        raw = "".join(lines[start - 1: reader.line_num]).rstrip("\r\n")[:MAX_RAW_CHARS]
        if None in row:
            yield Record(path, start, None, raw, f"wrong number of values: more than the {width} header columns")
        elif any(v is None for v in row.values()):
            missing = next(k for k, v in row.items() if v is None)
            yield Record(path, start, None, raw, f"wrong number of values: fewer than the {width} header columns (no '{missing}')")
        elif "\ufffd" in raw and err:
            yield Record(path, start, None, raw, "invalid UTF-8: undecodable bytes in the row")
        else:
            yield Record(path, start, dict(row), raw)
        start = reader.line_num + 1


def _read_parquet(path: Path) -> Iterator[Record]:
    """Rows of a Parquet file, numbered from 1, read one record batch at a time."""
    n = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000):
        for row in batch.to_pylist():
            n += 1
            yield Record(path, n, row, json.dumps(row, ensure_ascii=False, default=str)[:MAX_RAW_CHARS])


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write one JSON object per line (UTF-8, non-ASCII kept as is), creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSONL file written by :func:`write_jsonl` (tunesmith's own files; user data goes through :func:`read_records`)."""
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_sheet(path: Path, items: list[dict[str, Any]]) -> None:
    """Write review rows as a sheet: CSV (for spreadsheets) when ``path`` ends in .csv, else JSONL."""
    if path.suffix.lower() != ".csv":
        write_jsonl(path, items)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(k for item in items for k in item))
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(items)


def read_sheet(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """Rows of a sheet a person filled in (CSV or JSONL), each with its line number for error messages.

    Raises:
        DataError: The file is missing or a JSONL line is not valid JSON.
    """
    if not path.is_file():
        raise DataError("file not found", path=path)
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as fh:
            return [(i, dict(r)) for i, r in enumerate(csv.DictReader(fh), start=2)]  # line 1 is the header
    items = []
    with path.open(encoding="utf-8-sig") as fh:  # spreadsheet tools often add a BOM
        for line, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                items.append((line, json.loads(text)))
            except json.JSONDecodeError as exc:
                raise DataError(f"malformed JSON: {exc.msg}", path=path, line=line) from None
            except (RecursionError, ValueError) as exc:
                raise DataError(f"malformed JSON: {_unreadable(exc)}", path=path, line=line) from None
    return items
