"""The next data version: a production run's data plus reviewed new rows, with a fresh test set held out of them.

What stays fixed: the production run's validation split and its test split (the *frozen* test set
every later candidate is compared on). What grows: the training split, by the reviewed rows not
held out. A share of the reviewed rows (seeded, per label) becomes the *fresh* test set, which
measures the traffic the production model actually meets now. The data step's own checks decide
what joins: rows still waiting for review stay out; new training rows that repeat a training row
(exactly or nearly) or leak into either test set are set aside; fresh test rows that repeat a
training input are set aside too. Every row read is accounted for in :attr:`DataVersion.changes`.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tunesmith.config import DedupConfig
from tunesmith.data.examples import Example, examples_hash
from tunesmith.data.formats import example_to_row
from tunesmith.data.io import write_jsonl
from tunesmith.data.prepare import Splits, file_sha256, load_examples
from tunesmith.data.quality import deduplicate, find_leakage
from tunesmith.errors import DataError


@dataclass
class DataVersion:
    """Training data for a retrained candidate and the two test sets it is judged on.

    Attributes:
        train: The production run's training split plus the reviewed rows that joined it.
        validation: The production run's validation split, unchanged.
        frozen_test: The production run's test split, unchanged.
        fresh_test: Reviewed rows held out as the test set of recent traffic.
        labels: The label set (the production run's, plus labels the new rows bring), or None.
        format: The format the files are written in (text_label for classification, messages otherwise).
        parent_hash: The production run's data hash.
        sources: The reviewed files read, each with its SHA-256.
        changes: What changed, every row read accounted for (see :meth:`changes`).
        set_aside: The rows that did not join, each with its reason.
    """

    train: list[Example]
    validation: list[Example]
    frozen_test: list[Example]
    fresh_test: list[Example]
    labels: list[str] | None
    format: str
    parent_hash: str | None
    sources: list[dict[str, str]] = field(default_factory=list)
    changes: dict[str, Any] = field(default_factory=dict)
    set_aside: list[dict[str, Any]] = field(default_factory=list)

    @property
    def version(self) -> str:
        """A hash of the four sets' contents: the version's name."""
        h = hashlib.sha256()
        for part in (self.train, self.validation, self.frozen_test, self.fresh_test):
            h.update(examples_hash(part).encode())
        return h.hexdigest()

    def write(self, folder: Path) -> dict[str, Path]:
        """Write train, validation, test (frozen), fresh_test and changes.json into ``folder``; returns the files."""
        folder.mkdir(parents=True, exist_ok=True)
        files = {"train": folder / "train.jsonl", "validation": folder / "validation.jsonl",
                 "test": folder / "test.jsonl", "fresh_test": folder / "fresh_test.jsonl"}
        for name, rows in (("train", self.train), ("validation", self.validation), ("test", self.frozen_test),
                           ("fresh_test", self.fresh_test)):
            write_jsonl(files[name], ({"id": ex.id, **example_to_row(self.format, ex, {}), **_kept_meta(ex)}
                                      for ex in rows))
        write_jsonl(folder / "set_aside.jsonl", self.set_aside)
        files["changes"] = folder / "changes.json"
        files["changes"].write_text(json.dumps({"version": self.version, **self.changes}, indent=2, ensure_ascii=False))
        return files


def _kept_meta(ex: Example) -> dict[str, Any]:
    """Metadata worth keeping in the written rows (slices, fairness attributes), not the review bookkeeping."""
    return {k: v for k, v in ex.meta.items() if k not in ("needs_review", "provenance", "review", "messages", "id")
            and not isinstance(v, (dict, list))}


def read_reviewed(paths: list[Path], classification: bool) -> tuple[list[Example], list[dict[str, Any]], int]:
    """Reviewed rows from files in any data format (``logs export`` writes chat ``messages``).

    For classification the answer is the label. Rows still marked ``needs_review: true`` are set aside.

    Returns:
        (usable examples, set-aside rows with reasons, rows read).

    Raises:
        DataError: A file is missing.
    """
    usable, aside, read = [], [], 0
    for path in paths:
        if not Path(path).is_file():
            raise DataError("file not found (retrain.new_data)", path=path)
        loaded = load_examples(Path(path), "auto", {}, role="train")
        read += loaded.rows_read
        aside += [{"source": r.source, "line": r.line, "reason": r.reason} for r in loaded.rejected]
        for ex in loaded.examples:
            ex = replace(ex, id=f"new:{Path(path).name}:{ex.line}")
            if ex.meta.get("needs_review") is True:
                aside.append({"source": ex.source, "line": ex.line, "reason": "needs_review: still waiting for review"})
                continue
            if classification and ex.label is None:
                ex = replace(ex, label=ex.target.strip())
            usable.append(ex)
    return usable, aside, read


def _hold_out(rows: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(joins training, fresh test): ``fraction`` of each label's rows held out (at least one where a label has two)."""
    groups: dict[str | None, list[Example]] = {}
    for ex in rows:
        groups.setdefault(ex.label, []).append(ex)
    train, test = [], []
    rng = random.Random(seed)
    for label in sorted(groups, key=str):
        part = groups[label][:]
        rng.shuffle(part)
        k = round(len(part) * fraction)
        k = max(k, 1) if len(part) >= 2 else k
        test += part[:k]
        train += part[k:]
    return train, test


def next_data_version(base: Splits, new_files: list[Path], *, fresh_fraction: float, dedup: DedupConfig,
                      seed: int = 42) -> DataVersion:
    """The production run's splits plus the reviewed rows of ``new_files``, checked as the data step checks them.

    Args:
        base: The production run's stored splits.
        new_files: Reviewed rows (any format).
        fresh_fraction: Share of the reviewed rows held out as the fresh test set.
        dedup: The project's duplicate and leakage settings.
        seed: Seed of the hold-out.

    Raises:
        DataError: A file is missing, or no reviewed row is usable.
    """
    classification = base.labels is not None
    rows, aside, read = read_reviewed(new_files, classification)
    if not rows:
        raise DataError(f"no reviewed rows to add: {read} read from {', '.join(map(str, new_files)) or 'no files'}"
                        f" ({len(aside)} set aside: {Counter(a['reason'].split(':')[0] for a in aside).most_common()})")
    joining, fresh = _hold_out(rows, fresh_fraction, seed)
    why: Counter[str] = Counter()

    def drop(rows_out: list[Example], reason: str) -> None:
        if rows_out:
            why[reason] += len(rows_out)
        aside.extend({"source": ex.source, "line": ex.line, "id": ex.id, "reason": reason} for ex in rows_out)

    # New training rows must not leak into either test set.
    tests = [*base.test, *fresh]
    kept, leaked = find_leakage(tests, {"new": joining}, dedup)["new"]
    drop([ex for ex in joining if ex.id in {r.id for r in leaked}], "leakage: repeats a test input")
    # Nor repeat what training already holds (the first occurrence, the production row, is kept).
    merged, removed, _ = deduplicate([*base.train, *kept], dedup, "train")
    gone = {r.id for r in removed}
    drop([ex for ex in kept if ex.id in gone], "duplicate of a training row")
    added = [ex for ex in kept if ex.id not in gone]
    train = [*base.train, *added]
    # A fresh test row that repeats a training input measures memory, not the model.
    clean, leaking = find_leakage(train, {"fresh": fresh}, dedup)["fresh"]
    drop([ex for ex in fresh if ex.id in {r.id for r in leaking}], "fresh test row repeats a training input")
    fresh = clean
    labels = None
    if classification:
        labels = list(dict.fromkeys([*(base.labels or []), *sorted({ex.label for ex in added if ex.label})]))
    changes = {
        "parent_data_hash": base.data_hash(), "rows_read": read, "usable": len(rows),
        "set_aside_on_reading": read - len(rows), "held_out_as_fresh_test": len(fresh),
        "joined_training": len(added), "set_aside": dict(why),
        "training": {"before": len(base.train), "after": len(train)},
        "validation": len(base.validation), "frozen_test": len(base.test),
        "new_labels": [lab for lab in labels or [] if lab not in (base.labels or [])],
        "fresh_test_labels": dict(Counter(ex.label for ex in fresh if ex.label)) if classification else {},
    }
    # Every row read is accounted for: set aside on reading, held out, joined, or set aside by a check.
    assert read == changes["set_aside_on_reading"] + len(fresh) + len(added) + sum(why.values())
    sources = [{"path": str(p), "sha256": file_sha256(Path(p))} for p in new_files]
    return DataVersion(train, list(base.validation), list(base.test), fresh, labels,
                       "text_label" if classification else "messages", base.data_hash(), sources, changes, aside)
