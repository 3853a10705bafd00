"""From the config's data section to train/validation/test examples and their manifest."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.config import Config, resolve_path
from tunesmith.data.examples import Example, examples_hash
from tunesmith.data.formats import FORMATS, detect_format, row_to_example
from tunesmith.data.io import read_rows
from tunesmith.data.split import split_examples
from tunesmith.errors import DataError

#: The system message each task uses unless ``data.system_prompt`` is set; {labels} expands.
DEFAULT_SYSTEM_PROMPT: dict[str, str | None] = {
    "classification": "Classify the message. Answer with one label only, from: {labels}.",
    "qa": "Answer the question from the context. Reply with the shortest exact answer only.",
    "summarization": "Summarise the text in one short sentence.",
    "generation": None,
}


@dataclass
class Splits:
    """The three splits and what describes them.

    Attributes:
        train: Training examples.
        validation: Validation examples (may be empty).
        test: Held-out test examples.
        format: The data format used.
        labels: The label set (classification), else None.
        system_prompt: The task's system message with {labels} expanded, or None.
        sources: Each input file with its SHA-256.
    """

    train: list[Example]
    validation: list[Example]
    test: list[Example]
    format: str
    labels: list[str] | None = None
    system_prompt: str | None = None
    sources: list[dict[str, str]] = field(default_factory=list)

    def manifest(self) -> dict[str, Any]:
        """Counts, hashes and label distribution of each split."""
        out: dict[str, Any] = {"format": self.format, "sources": self.sources, "splits": {}}
        for name, part in (("train", self.train), ("validation", self.validation), ("test", self.test)):
            entry: dict[str, Any] = {"count": len(part), "sha256": examples_hash(part)}
            if self.labels is not None:
                entry["labels"] = dict(sorted(Counter(ex.label for ex in part).items()))
            out["splits"][name] = entry
        out["labels"] = self.labels
        out["system_prompt"] = self.system_prompt
        return out

    def counts(self) -> dict[str, int]:
        """Number of examples per split."""
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}

    def save(self, folder: Path) -> None:
        """Write each split as JSONL and the manifest as JSON into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, part in (("train", self.train), ("validation", self.validation), ("test", self.test)):
            with (folder / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
                for ex in part:
                    fh.write(json.dumps(ex.to_dict(), ensure_ascii=False) + "\n")
        (folder / "manifest.json").write_text(json.dumps(self.manifest(), indent=2, ensure_ascii=False))

    @classmethod
    def load(cls, folder: Path) -> Splits:
        """Read splits written by :meth:`save`.

        Raises:
            DataError: The folder does not hold saved splits.
        """
        manifest_path = folder / "manifest.json"
        if not manifest_path.is_file():
            raise DataError("no saved data splits (manifest.json missing)", path=folder)
        manifest = json.loads(manifest_path.read_text())
        parts = {}
        for name in ("train", "validation", "test"):
            with (folder / f"{name}.jsonl").open(encoding="utf-8") as fh:
                parts[name] = [Example.from_dict(json.loads(line)) for line in fh if line.strip()]
        return cls(parts["train"], parts["validation"], parts["test"], manifest["format"],
                   manifest.get("labels"), manifest.get("system_prompt"), manifest.get("sources", []))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_examples(path: Path, fmt_name: str, columns: dict[str, str]) -> tuple[list[Example], str]:
    """Read one data file into examples.

    Args:
        path: The data file.
        fmt_name: A registered format, or ``auto``.
        columns: Format field -> column name mapping.

    Returns:
        The examples and the format that was used.

    Raises:
        DataError: The file or one of its rows is invalid (file, line and field named).
    """
    examples: list[Example] = []
    fmt = None
    for line, row in read_rows(path):
        if fmt is None:
            try:
                name = detect_format(set(row), columns) if fmt_name == "auto" else fmt_name
            except DataError as exc:
                raise DataError(str(exc), path=path, line=line) from None
            fmt = FORMATS[name]
        examples.append(row_to_example(fmt, row, columns, path=path, line=line))
    assert fmt is not None  # read_rows raises on empty files
    return examples, fmt.name


def render_system_prompt(template: str | None, labels: list[str] | None) -> str | None:
    """Expand ``{labels}`` in a system-prompt template."""
    if template is None:
        return None
    return template.replace("{labels}", ", ".join(labels or []))


def prepare_splits(cfg: Config, base_dir: Path) -> Splits:
    """Load the configured data and produce the three splits.

    Args:
        cfg: The project config.
        base_dir: Folder that relative data paths are resolved against.

    Returns:
        The splits, deterministic for the same files, config and seed.

    Raises:
        DataError: A file or row is invalid, a split is empty, or a label is unknown.
    """
    d = cfg.data
    task = cfg.objective.task
    train_path = resolve_path(base_dir, d.train)
    train, fmt_name = load_examples(train_path, d.format, d.columns)
    sources = [{"path": str(train_path), "sha256": _sha256(train_path)}]
    if task == "classification" and any(ex.label is None for ex in train[:1]):
        raise DataError(f"task 'classification' needs labelled rows, but the data is in '{fmt_name}' format "
                        "(expected fields text and label)", path=train_path)
    if d.max_examples is not None and len(train) > d.max_examples:
        rng = random.Random(cfg.project.seed)
        keep = sorted(rng.sample(range(len(train)), d.max_examples))
        train = [train[i] for i in keep]

    if d.validation is not None and d.test is not None:
        val_path, test_path = resolve_path(base_dir, d.validation), resolve_path(base_dir, d.test)
        validation, _ = load_examples(val_path, fmt_name, d.columns)
        test, _ = load_examples(test_path, fmt_name, d.columns)
        sources += [{"path": str(p), "sha256": _sha256(p)} for p in (val_path, test_path)]
    else:
        fr = (d.split.train, d.split.validation, d.split.test)
        train, validation, test = split_examples(train, fr, cfg.project.seed, stratify=task == "classification")

    labels: list[str] | None = None
    if task == "classification":
        labels = list(d.labels) if d.labels else sorted({ex.label for ex in train if ex.label is not None})
        known = set(labels)
        for name, part in (("train", train), ("validation", validation), ("test", test)):
            for ex in part:
                if ex.label not in known:
                    raise DataError(f"unknown label {ex.label!r} in the {name} split (example {ex.id}); "
                                    f"known labels: {', '.join(labels)}", field="label")
    if not train:
        raise DataError("the training split is empty", path=train_path)
    if not test:
        raise DataError("the test split is empty: add data or raise data.split.test", path=train_path)
    template = d.system_prompt if d.system_prompt is not None else DEFAULT_SYSTEM_PROMPT[task]
    return Splits(train, validation, test, fmt_name, labels, render_system_prompt(template, labels), sources)
