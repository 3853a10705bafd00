"""Answering every row of a file with a run's tuned model: ``tunesmith predict``.

Rows are read in any supported format (the run's, unless told otherwise), cleaned and scrubbed as
the run's training data was, rendered with the run's system prompt and answered in batches. The
answer column may be missing (it is what is asked for); rows that cannot be used are set aside with
the reason and their raw text, so the counts add up. Answers are written a chunk at a time and
flushed to disk, so an interrupted run keeps every answer it reported.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from tunesmith.config import Config
from tunesmith.console import make_progress
from tunesmith.data.encode import encode_prompt, head_prompt
from tunesmith.data.examples import Example
from tunesmith.data.formats import FORMATS, DataFormat, detect_format, row_to_example
from tunesmith.data.io import data_files, read_records
from tunesmith.data.prepare import Splits
from tunesmith.data.quality import clean_example, scrub_pii
from tunesmith.errors import DataError, UserError
from tunesmith.evaluate.normalize import match_label
from tunesmith.evaluate.evaluator import constrains
from tunesmith.inference.constrained import answers_within_labels, label_trie
from tunesmith.inference.generate import generate_batched
from tunesmith.inference.classify import classify_batched, most_probable
from tunesmith.models.load import is_classifier
from tunesmith.runs.folder import RunPaths
from tunesmith.steps.model import load_tuned

#: Rows answered and written per chunk (each chunk is flushed to disk before the next is read).
CHUNK = 256


@dataclass
class PredictSummary:
    """What ``predict`` did; ``rows_read == answered + set_aside``.

    Attributes:
        run_id: The run whose model answered.
        rows_read: Rows read from the input.
        answered: Rows answered and written to ``out``.
        set_aside: Rows that could not be used, written to ``rejected`` with the reason.
        out: The answers file.
        rejected: The set-aside rows' file (only written when there are some).
        format: The data format the rows were read as.
        seconds: Wall time.
        constrained: Classification answers were decoded within the label set (``eval.constrained``).
        unmatched: Classification only: free answers that name no known label (with answers constrained to the
            labels, ``prediction`` is still a label; else it is empty).
    """

    run_id: str
    rows_read: int
    answered: int
    set_aside: int
    out: str
    rejected: str
    format: str
    seconds: float
    unmatched: int = 0
    constrained: bool = False


class _Writer:
    """JSONL or CSV rows, flushed and synced after every chunk."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.csv = path.suffix.lower() == ".csv"
        self.fh: IO[str] = path.open("w", encoding="utf-8", newline="" if self.csv else None)
        self.writer: csv.DictWriter | None = None

    def write(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            if self.csv:
                flat = {k: v if isinstance(v, str) or v is None else json.dumps(v, ensure_ascii=False)
                        for k, v in row.items()}
                if self.writer is None:
                    self.writer = csv.DictWriter(self.fh, fieldnames=list(flat), extrasaction="ignore")
                    self.writer.writeheader()
                self.writer.writerow(flat)
            else:
                self.fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()


def _input_fields(fmt: DataFormat, columns: dict[str, str], row: dict[str, Any]) -> dict[str, Any]:
    """The row's own columns that the format reads as input (the answer column left out)."""
    names = [f for f in fmt.required + fmt.optional if f != fmt.answer]
    return {columns.get(f, f): row[columns.get(f, f)] for f in names if columns.get(f, f) in row}


def _rows(path: Path) -> Iterator[Any]:
    for file in data_files(path):
        yield from read_records(file)


def predict_file(run: RunPaths, cfg: Config, splits: Splits, path: Path, out: Path, *, data_format: str | None = None,
                 batch_size: int | None = None, max_new_tokens: int | None = None) -> PredictSummary:
    """Answer every row of ``path`` with the run's tuned model and write the answers to ``out``.

    Args:
        run: The run.
        cfg: Its stored config.
        splits: Its stored splits (system prompt, labels, format).
        path: A data file or folder, in any supported format.
        out: The answers file (``.csv`` for CSV, else JSONL); set-aside rows go next to it as
            ``<name>.rejected.jsonl``.
        data_format: The format to read the rows as (default: the run's; ``auto`` detects it).
        batch_size: Prompts generated together (default: the run's ``eval.batch_size``).
        max_new_tokens: Longest answer (default: the run's ``eval.max_new_tokens``).

    Returns:
        The counts and where the files are.

    Raises:
        UserError: A run of a data mix (each task has its own prompt: answer with one task's data), or
            a run without an adapter.
        DataError: The input cannot be read at all.
    """
    start = time.perf_counter()
    if splits.format == "mix":
        raise UserError("predict answers one task's rows; this run trained on a data.mix of several tasks")
    fmt_name = data_format or splits.format
    columns = dict(cfg.data.columns)
    records = list(_rows(path))
    if fmt_name == "auto":
        good = next((r for r in records if r.row is not None), None)
        if good is None:
            raise DataError("no readable rows", path=path)
        fmt_name = detect_format(set(good.row), columns)
    fmt = FORMATS[fmt_name]
    rejected_path = out.with_name(out.name.rsplit(".", 1)[0] + ".rejected.jsonl")
    set_aside: list[dict[str, Any]] = []
    usable: list[tuple[Any, Example]] = []
    for record in records:
        if record.error is not None:
            set_aside.append({"source": str(record.source), "line": record.line, "reason": record.error, "raw": record.raw})
            continue
        try:
            ex = row_to_example(fmt, record.row, columns, path=record.source, line=record.line, answer_required=False)
        except DataError as exc:
            set_aside.append({"source": str(record.source), "line": record.line, "reason": exc.reason, "raw": record.raw})
            continue
        kept, dropped, _ = scrub_pii([clean_example(ex, cfg.data.clean)], cfg.data.pii, "predict")
        if dropped:
            set_aside.append({"source": str(record.source), "line": record.line, "raw": record.raw,
                              "reason": "personal data found and data.pii.policy is drop"})
            continue
        usable.append((record, kept[0]))

    lm = load_tuned(cfg, run, splits.labels)
    head = is_classifier(lm.model)
    writer = _Writer(out)
    unmatched = 0
    batch, tokens = batch_size or cfg.eval.batch_size, max_new_tokens or cfg.eval.max_new_tokens
    # Classification answers as evaluation gave them: within the label set, with their probability.
    trie = label_trie(lm.tokenizer, splits.labels or [], splits.system_prompt) if not head and constrains(
        cfg.objective.task, splits.labels, None, cfg.eval) else None
    try:
        with make_progress() as bar:
            task = bar.add_task("predict", total=len(usable), info="")
            for at in range(0, len(usable), CHUNK):
                chunk = usable[at: at + CHUNK]
                fit = (lambda ex: head_prompt(lm.tokenizer, ex, splits.system_prompt, cfg.model.max_seq_len)[0]) if head \
                    else (lambda ex: encode_prompt(lm.tokenizer, ex, splits.system_prompt, cfg.model.max_seq_len))
                prompts = [fit(ex) for _, ex in chunk]
                if head:  # one forward pass: the most probable label and every label's probability
                    rows = []
                    for (record, ex), probs in zip(chunk, classify_batched(lm, prompts, batch, progress=(bar, task))):
                        label, confidence = most_probable(splits.labels or [], probs)
                        rows.append({"id": ex.id, "line": record.line, **_input_fields(fmt, columns, record.row),
                                     "prediction": label, "confidence": confidence,
                                     "probabilities": dict(zip(splits.labels or [], (round(p, 6) for p in probs)))})
                    writer.write(rows)
                    continue
                answers = None
                if trie:  # the free answer is read off the labels' pass wherever it is the same
                    outputs, answers = answers_within_labels(lm, prompts, trie, tokens, batch, progress=(bar, task))
                else:
                    outputs = generate_batched(lm, prompts, tokens, batch, progress=(bar, task))
                rows = []
                for k, ((record, ex), output) in enumerate(zip(chunk, outputs)):
                    prediction, extra = output, {}
                    if splits.labels:
                        prediction = match_label(output, splits.labels) or ""
                        unmatched += not prediction
                    if answers is not None:
                        extra = {"unconstrained": prediction, "confidence": answers[k].probability}
                        prediction = answers[k].label
                    rows.append({"id": ex.id, "line": record.line, **_input_fields(fmt, columns, record.row),
                                 "prediction": prediction, **extra, "output": output})
                writer.write(rows)
    finally:
        writer.close()
    if set_aside:
        with rejected_path.open("w", encoding="utf-8") as fh:
            for row in set_aside:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    elif rejected_path.exists():
        rejected_path.unlink()  # a stale file from an earlier call would contradict the counts
    return PredictSummary(run.id, len(records), len(usable), len(set_aside), str(out), str(rejected_path), fmt_name,
                          round(time.perf_counter() - start, 2), unmatched, trie is not None or head)


def summary_dict(summary: PredictSummary) -> dict[str, Any]:
    """The summary as JSON."""
    return asdict(summary)
