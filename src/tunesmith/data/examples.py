"""The one in-memory form every data format is turned into."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Example:
    """One training or evaluation example.

    Attributes:
        id: Stable identifier (source file and line unless the data gives one).
        prompt: The user message.
        target: The reference completion the model should produce.
        label: The class label for classification, else None.
        system: A per-example system message overriding the task's, if any.
        meta: Any other fields of the row, kept for reports and slicing.
        source: Name of the file the row came from.
        line: Its line (or item) number there.
        turns: For multi-turn conversations, every user/assistant turn (the last two are
            ``prompt`` and ``target``); None for single-turn examples.
        plain: Plain text for continued pre-training: no chat template, every token carries
            a label; ``prompt`` + ``target`` is the text (the split only matters for evaluation,
            which continues the first half).
        context: The part of ``prompt`` that several examples may share without being the same
            example: a QA passage, an alpaca instruction given with its own input. Duplicates,
            conflicts and leakage are judged between examples of the same context on the rest of
            the prompt, and QA splits keep a passage's questions together. None when nothing is shared.
    """

    id: str
    prompt: str
    target: str
    label: str | None = None
    system: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    line: int = 0
    turns: list[dict[str, str]] | None = None
    plain: bool = False
    context: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (``meta`` and ``turns`` shared, not copied: for writing, not mutating)."""
        # dataclasses.asdict deep-copies recursively and took half of a 100k-row data check.
        out = {"id": self.id, "prompt": self.prompt, "target": self.target, "label": self.label, "system": self.system,
               "meta": self.meta, "source": self.source, "line": self.line, "turns": self.turns, "plain": self.plain}
        if self.context is not None:  # only where set, so data without one hashes as it always did
            out["context"] = self.context
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Example:
        """Rebuild an example written by :meth:`to_dict`."""
        return cls(**d)


def examples_hash(examples: list[Example]) -> str:
    """SHA-256 of the examples' content, order included."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps(ex.to_dict(), sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def _reason_kind(reason: str) -> str:
    """The reason without its particulars, for counting: ``malformed JSON``, ``field 'label': empty value``."""
    m = re.match(r"(field '[^']*': [^'(:]*)", reason)
    return (m.group(1) if m else reason.split(":", 1)[0]).strip()


@dataclass(frozen=True)
class Rejected:
    """A row set aside, with why.

    Attributes:
        source: The file.
        line: The line (or item) number in it.
        reason: What is wrong, naming the field where one is at fault.
        raw: The row's raw text (possibly cut).
        split: Which input it was read for: train, validation or test.
    """

    source: str
    line: int
    reason: str
    raw: str
    split: str = "train"

    @property
    def kind(self) -> str:
        """The reason without particulars, for counts by reason."""
        return _reason_kind(self.reason)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict, the reason's kind included."""
        return {**asdict(self), "kind": self.kind}
