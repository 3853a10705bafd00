"""Data formats: one registry entry each, holding its fields and how a row becomes an Example.

Adding a format means one :func:`register_format` call here and one test row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tunesmith.errors import DataError
from tunesmith.data.examples import Example


@dataclass(frozen=True)
class DataFormat:
    """How rows of one shape are read.

    Attributes:
        name: Registry key, used in ``data.format``.
        required: Fields every row must have (non-empty strings).
        optional: Fields used when present.
        build: Turns the mapped fields of a valid row into (prompt, target, label).
        tasks: Tasks this format is natural for; used only to order auto-detection.
    """

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    build: Callable[[dict[str, str]], tuple[str, str, str | None]]
    tasks: tuple[str, ...]


FORMATS: dict[str, DataFormat] = {}


def register_format(fmt: DataFormat) -> DataFormat:
    """Add a format to the registry.

    Raises:
        ValueError: A format of that name is already registered.
    """
    if fmt.name in FORMATS:
        raise ValueError(f"data format {fmt.name!r} is already registered")
    FORMATS[fmt.name] = fmt
    return fmt


def _qa_prompt(f: dict[str, str]) -> str:
    ctx = f.get("context", "").strip()
    return f"Context: {ctx}\n\nQuestion: {f['question']}" if ctx else f["question"]


register_format(DataFormat("text_label", ("text", "label"), (), lambda f: (f["text"], f["label"], f["label"]), ("classification",)))
register_format(DataFormat("prompt_response", ("prompt", "response"), ("system",), lambda f: (f["prompt"], f["response"], None), ("generation",)))
register_format(DataFormat("qa", ("question", "answer"), ("context",), lambda f: (_qa_prompt(f), f["answer"], None), ("qa",)))
register_format(DataFormat("alpaca", ("instruction", "output"), ("input",),
                            lambda f: (f"{f['instruction']}\n\n{f['input']}" if f.get("input") else f["instruction"],
                                       f["output"], None), ("generation",)))
register_format(DataFormat("document_summary", ("document", "summary"), (), lambda f: (f["document"], f["summary"], None), ("summarization",)))


def detect_format(keys: set[str], columns: dict[str, str]) -> str:
    """Pick the registered format whose required fields the row has.

    Args:
        keys: The field names of the first row.
        columns: The user's mapping from format field to column name.

    Returns:
        The format's name.

    Raises:
        DataError: No format or more than one fits.
    """
    fits = [f.name for f in FORMATS.values() if all(columns.get(r, r) in keys for r in f.required)]
    if len(fits) == 1:
        return fits[0]
    if not fits:
        shapes = "; ".join(f"{f.name}: {', '.join(f.required)}" for f in FORMATS.values())
        raise DataError(f"cannot tell the data format from the fields {sorted(keys)}; expected one of {shapes} "
                        "(set data.format, or map your column names with data.columns)")
    raise DataError(f"fields {sorted(keys)} fit several formats ({', '.join(fits)}); set data.format")


def row_to_example(fmt: DataFormat, row: dict[str, Any], columns: dict[str, str], *, path: object, line: int) -> Example:
    """Validate one raw row and build its Example.

    Args:
        fmt: The row format.
        row: The parsed row.
        columns: Format field -> column name mapping.
        path: Source file, for messages and the id.
        line: 1-based line (or CSV record) number.

    Raises:
        DataError: A required field is missing, empty or not a string (naming file, line and field).
    """
    fields: dict[str, str] = {}
    for name in fmt.required + fmt.optional:
        col = columns.get(name, name)
        if col not in row or row[col] is None:
            if name in fmt.required:
                raise DataError("missing required field", path=path, line=line, field=col)
            continue
        value = row[col]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and name == "label":
            value = str(value)
        if not isinstance(value, str):
            raise DataError(f"expected a string, got {type(value).__name__}", path=path, line=line, field=col)
        if name in fmt.required and not value.strip():
            raise DataError("empty value", path=path, line=line, field=col)
        fields[name] = value.strip()
    prompt, target, label = fmt.build(fields)
    used = {columns.get(n, n) for n in fmt.required + fmt.optional}
    meta = {k: v for k, v in row.items() if k not in used and k != "id"}
    ex_id = str(row["id"]) if row.get("id") is not None else f"{getattr(path, 'name', path)}:{line}"
    return Example(id=ex_id, prompt=prompt, target=target, label=label, system=fields.get("system"), meta=meta,
                   source=getattr(path, "name", str(path)), line=line)
