"""Human review of generated rows: export a sheet, import the decisions and edits back.

The sheet (CSV for spreadsheets, or JSONL) has one row per generated row: ``review_id``,
an empty ``decision`` column (approve or reject), the row's own fields, which the reviewer
may edit, and its provenance for reference. Importing marks approved rows
``needs_review: false`` (with who and when), moves rejected ones aside, and leaves the
undecided ones waiting.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tunesmith.data.io import read_jsonl, read_sheet, write_jsonl, write_sheet
from tunesmith.errors import DataError

APPROVE = {"approve", "approved", "yes", "y", "ok", "1", "true", "x", "accept"}
REJECT = {"reject", "rejected", "no", "n", "0", "false", "drop"}
_INFO = ("review_id", "decision", "method", "seed_ids", "generator")
_META = ("needs_review", "provenance", "review")


def _editable(row: dict[str, Any]) -> dict[str, str]:
    """The row's own fields as sheet cells (lists and objects as JSON)."""
    return {k: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for k, v in row.items() if k not in _META}


def export_sheet(generated: Path, out: Path) -> int:
    """Write the rows still waiting for review as a sheet (``.csv`` or ``.jsonl`` by ``out``'s suffix).

    Returns:
        How many rows the sheet holds.

    Raises:
        DataError: The generated file is missing or holds no rows waiting for review.
    """
    if not generated.is_file():
        raise DataError("file not found", path=generated)
    items = []
    for i, row in enumerate(read_jsonl(generated), start=1):
        if row.get("needs_review") is not True:
            continue
        prov = row.get("provenance") or {}
        items.append({"review_id": i, "decision": "", **_editable(row), "method": prov.get("method", ""),
                      "seed_ids": ",".join(map(str, prov.get("seed_ids", []))), "generator": prov.get("generator", "")})
    if not items:
        raise DataError("no rows are waiting for review (needs_review: true)", path=generated)
    write_sheet(out, items)
    return len(items)


@dataclass
class ReviewResult:
    """What an import did.

    Attributes:
        counts: approved, rejected, pending and edited rows.
        rejected_path: Where rejected rows were moved, if any.
    """

    counts: dict[str, int]
    rejected_path: Path | None


def import_sheets(sheets: list[Path], generated: Path, reviewer: str = "") -> ReviewResult:
    """Apply the decisions and edits of one or more sheets to the generated file, in place.

    Args:
        sheets: Reviewed sheets (CSV or JSONL) exported by :func:`export_sheet`.
        generated: The generated rows file the sheets came from.
        reviewer: Name recorded on each decided row.

    Returns:
        Counts, and the file rejected rows were moved to.

    Raises:
        DataError: A sheet row has an unknown ``review_id`` or an unreadable ``decision`` or edited field
            (the sheet, its line and the field are named); nothing is written then.
    """
    rows = list(read_jsonl(generated))
    decided: dict[int, tuple[str, dict[str, Any]]] = {}
    for sheet in sheets:
        for line, item in read_sheet(sheet):
            try:
                rid = int(item.get("review_id", ""))
            except (TypeError, ValueError):
                raise DataError("expected a row number", path=sheet, line=line, field="review_id") from None
            if not 1 <= rid <= len(rows) or rows[rid - 1].get("needs_review") is not True:
                raise DataError(f"no row {rid} waiting for review in {generated}", path=sheet, line=line, field="review_id")
            decision = str(item.get("decision") or "").strip().lower()
            if decision and decision not in APPROVE | REJECT:
                raise DataError(f"{decision!r} is neither approve nor reject (leave it empty to decide later)",
                                path=sheet, line=line, field="decision")
            edits = {}
            for key, value in item.items():
                if key in _INFO or key not in rows[rid - 1]:
                    continue
                original = rows[rid - 1][key]
                if isinstance(original, str):
                    edits[key] = value
                    continue
                try:
                    edits[key] = json.loads(value) if isinstance(value, str) else value
                except json.JSONDecodeError as exc:
                    raise DataError(f"not valid JSON: {exc.msg}", path=sheet, line=line, field=key) from None
            if decision:
                decided[rid] = ("approved" if decision in APPROVE else "rejected", edits)
    at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    kept, moved, counts = [], [], Counter({"approved": 0, "rejected": 0, "pending": 0, "edited": 0})
    for rid, row in enumerate(rows, start=1):
        if rid not in decided:
            counts["pending"] += row.get("needs_review") is True
            kept.append(row)
            continue
        verdict, edits = decided[rid]
        changed = {k: v for k, v in edits.items() if row.get(k) != v}
        row = {**row, **changed, "needs_review": verdict != "approved",
               "review": {"decision": verdict, "edited": sorted(changed), "reviewer": reviewer, "at": at}}
        counts[verdict] += 1
        counts["edited"] += bool(changed)
        (kept if verdict == "approved" else moved).append(row)
    write_jsonl(generated, kept)
    rejected_path = None
    if moved:
        rejected_path = generated.with_name(generated.stem + ".rejected.jsonl")
        write_jsonl(rejected_path, [*(read_jsonl(rejected_path) if rejected_path.is_file() else []), *moved])
    return ReviewResult(dict(counts), rejected_path)
