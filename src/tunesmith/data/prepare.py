"""From the config's data section to train/validation/test examples and their manifest."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.config import Config, resolve_path, resolve_paths
from tunesmith.data.balance import balance_train
from tunesmith.data.encode import render_preview
from tunesmith.data.examples import Example, Rejected, examples_hash
from tunesmith.data.formats import FORMATS, detect_format, row_to_example
from tunesmith.data.io import data_files, read_jsonl, read_records, write_jsonl
from tunesmith.data.lengths import TokenCounter, measure_splits
from tunesmith.data.mix import combine_sources, source_config
from tunesmith.data.quality import Removed, clean_example, deduplicate, find_leakage, scrub_pii, shared_passages
from tunesmith.data.split import split_examples
from tunesmith.errors import DataError
from tunesmith.tasks import get_task

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
        rejected: Rows set aside, each with its reason.
        rows_read: Every row read from the inputs.
        removed_rows: Rows dropped on purpose, each with the rule that dropped it.
        warnings: File-level notes, such as an empty file.
        conflicts: Inputs that appear with different answers.
        leakage_found: Evaluation examples that nearly duplicate a training input.
        pii: Personal data and secrets found, by type.
        pii_policy: What was done with them.
        columns: The format's fields and the columns they were read from.
        lengths: Token-length summary per split (when a tokenizer was given).
        length_values: Every kept example's token length, for the histogram.
        balance: Label counts of the training split, imbalance ratio and strategy (classification).
        class_weights: Loss weight per label under ``balance.strategy: loss_weights``, else None.
        oversampled: Copies added to the training split by oversampling (not rows read).
        preview: One training example rendered exactly as training sees it, and the part that carries loss.
        tasks: Per task tag of a ``data.mix`` run: type, weight, format, labels, system prompt, sources
            and counts (see :func:`tunesmith.data.mix.task_summary`); empty for a single dataset.
    """

    train: list[Example]
    validation: list[Example]
    test: list[Example]
    format: str
    labels: list[str] | None = None
    system_prompt: str | None = None
    sources: list[dict[str, str]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    rows_read: int = 0
    removed_rows: list[Removed] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    conflicts: int = 0
    leakage_found: int = 0
    pii: dict[str, int] = field(default_factory=dict)
    pii_policy: str = "redact"
    columns: dict[str, str] = field(default_factory=dict)
    lengths: dict[str, Any] = field(default_factory=dict)
    length_values: list[int] = field(default_factory=list)
    balance: dict[str, Any] = field(default_factory=dict)
    class_weights: dict[str, float] | None = None
    oversampled: int = 0
    preview: dict[str, str] | None = None
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def accounting(self) -> dict[str, Any]:
        """Where every row read went: ``rows_read == kept + rejected + sum(removed.values())``."""
        kept = len(self.train) + len(self.validation) + len(self.test) - self.oversampled
        return {"rows_read": self.rows_read, "kept": kept, "oversampled": self.oversampled, "rejected": len(self.rejected),
                "rejected_by_reason": dict(Counter(r.kind for r in self.rejected).most_common()),
                "removed": dict(Counter(r.rule for r in self.removed_rows).most_common()),
                "conflicts": self.conflicts, "leakage_found": self.leakage_found,
                "pii": dict(self.pii), "pii_policy": self.pii_policy, "warnings": list(self.warnings)}

    def manifest(self) -> dict[str, Any]:
        """Counts, hashes and label distribution of each split."""
        out: dict[str, Any] = {"format": self.format, "sources": self.sources, "splits": {}}
        hashes = self.split_hashes()
        for name, part in (("train", self.train), ("validation", self.validation), ("test", self.test)):
            entry: dict[str, Any] = {"count": len(part), "sha256": hashes[name]}
            if self.labels is not None:
                entry["labels"] = dict(sorted(Counter(ex.label for ex in part if ex.label is not None).items()))
            out["splits"][name] = entry
        out["data_hash"] = self.data_hash(hashes)
        out["labels"] = self.labels
        out["system_prompt"] = self.system_prompt
        out["columns"] = self.columns
        out["accounting"] = self.accounting()
        out["lengths"] = self.lengths
        out["balance"] = self.balance
        out["class_weights"] = self.class_weights
        out["preview"] = self.preview
        if self.tasks:
            out["tasks"] = self.tasks
        return out

    def split_hashes(self) -> dict[str, str]:
        """SHA-256 of each split's content, order included."""
        return {"train": examples_hash(self.train), "validation": examples_hash(self.validation),
                "test": examples_hash(self.test)}

    def data_hash(self, split_hashes: dict[str, str] | None = None) -> str:
        """One SHA-256 over the three splits' contents and the system prompt: the data version a run records."""
        hashes = split_hashes or self.split_hashes()
        h = hashlib.sha256()
        for name in ("train", "validation", "test"):
            h.update(hashes[name].encode())
        h.update((self.system_prompt or "").encode())
        return h.hexdigest()

    def counts(self) -> dict[str, int]:
        """Number of examples per split."""
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}

    def save(self, folder: Path) -> dict[str, Any]:
        """Write each split as JSONL and the manifest as JSON into ``folder``.

        Returns:
            The manifest written.
        """
        folder.mkdir(parents=True, exist_ok=True)
        for name, rows in (("train", self.train), ("validation", self.validation), ("test", self.test),
                           ("rejected", self.rejected), ("removed", self.removed_rows)):
            write_jsonl(folder / f"{name}.jsonl", (r.to_dict() for r in rows))
        manifest = self.manifest()
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
        return manifest

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
        parts = {name: [Example.from_dict(d) for d in read_jsonl(folder / f"{name}.jsonl")]
                 for name in ("train", "validation", "test")}
        # "kind" is derived from the reason when written, not a field
        rejected = [Rejected(**{k: v for k, v in d.items() if k != "kind"}) for d in read_jsonl(folder / "rejected.jsonl")]
        removed = [Removed(**d) for d in read_jsonl(folder / "removed.jsonl")]
        acc = manifest.get("accounting", {})
        return cls(parts["train"], parts["validation"], parts["test"], manifest["format"],
                   manifest.get("labels"), manifest.get("system_prompt"), manifest.get("sources", []),
                   rejected, acc.get("rows_read", 0), removed, acc.get("warnings", []),
                   acc.get("conflicts", 0), acc.get("leakage_found", 0), acc.get("pii", {}), acc.get("pii_policy", "redact"),
                   manifest.get("columns", {}), manifest.get("lengths", {}), [], manifest.get("balance", {}),
                   manifest.get("class_weights"), acc.get("oversampled", 0), manifest.get("preview"),
                   manifest.get("tasks", {}))


def file_sha256(path: Path) -> str:
    """A file's SHA-256, read in blocks (what manifests and lineage record of an input file)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Loaded:
    """What reading one configured input (file or folder) produced.

    Attributes:
        examples: The usable rows as examples.
        rejected: The rows set aside, each with its reason.
        format: The data format used.
        rows_read: Every row read (``len(examples) + len(rejected)``).
        sources: Each file read with its SHA-256.
        warnings: File-level notes (an empty file, say).
        raws: (file name, line) -> (file path, the row's raw text as read), for rows set aside later
            (an unknown label) with what was read rather than a re-serialisation.
    """

    examples: list[Example]
    rejected: list[Rejected]
    format: str
    rows_read: int
    sources: list[dict[str, str]]
    warnings: list[str]
    raws: dict[tuple[str, int], tuple[str, str]] = field(default_factory=dict)


def load_examples(path: Path | list[Path], fmt_name: str, columns: dict[str, str], role: str = "train") -> Loaded:
    """Read a data file or folder into examples, setting aside the rows that cannot be used.

    Args:
        path: A data file, a folder of data files, or a list of either.
        fmt_name: A registered format, or ``auto`` (detected from the first usable row).
        columns: Format field -> column name mapping.
        role: Which input this is (train, validation, test), recorded on set-aside rows.

    Returns:
        Examples, set-aside rows and counts; ``rows_read`` equals kept plus set aside.

    Raises:
        DataError: A file cannot be read at all, or no row fits any known format.
    """
    records, sources, warnings = [], [], []
    paths = path if isinstance(path, list) else [path]
    for file in (f for p in paths for f in data_files(p)):
        sources.append({"path": str(file), "sha256": file_sha256(file)})
        before = len(records)
        records.extend(read_records(file))
        if len(records) == before:
            warnings.append(f"{file}: the file holds no rows")
    rejected = [Rejected(str(r.source), r.line, r.error, r.raw, role) for r in records if r.error]
    good = [r for r in records if r.error is None]
    if fmt_name == "auto":
        fmt_name = _detect(good, columns, paths[0])
    fmt = FORMATS[fmt_name]
    examples = []
    for r in good:
        try:
            examples.append(row_to_example(fmt, r.row, columns, path=r.source, line=r.line))
        except DataError as exc:
            rejected.append(Rejected(str(r.source), r.line, exc.reason, r.raw, role))
    rejected.sort(key=lambda x: (x.source, x.line))
    raws = {(r.source.name, r.line): (str(r.source), r.raw) for r in good}
    return Loaded(examples, rejected, fmt_name, len(records), sources, warnings, raws)


def _detect(records: list[Any], columns: dict[str, str], path: Path) -> str:
    """The format of the first row whose fields fit exactly one format."""
    first_error: DataError | None = None
    for r in records[:100]:
        try:
            return detect_format(set(r.row), columns)
        except DataError as exc:
            first_error = first_error or DataError(str(exc), path=r.source, line=r.line)
    if first_error is None:
        raise DataError("no readable rows", path=path)
    raise first_error


def render_system_prompt(template: str | None, labels: list[str] | None) -> str | None:
    """Expand ``{labels}`` in a system-prompt template."""
    if template is None:
        return None
    return template.replace("{labels}", ", ".join(labels or []))


def prepare_splits(cfg: Config, base_dir: Path, require_test: bool = True, tokenizer: Any = None) -> Splits:
    """Load the configured data and produce the three splits.

    Args:
        cfg: The project config.
        base_dir: Folder that relative data paths are resolved against.
        require_test: Fail when the test split ends up empty (training needs one; a data check does not).
        tokenizer: The model's tokenizer; with it, token lengths are measured, ``data.length_policy``
            applied and one example rendered as a preview.

    Returns:
        The splits, deterministic for the same files, config and seed.

    Raises:
        DataError: A file or row is invalid, a split is empty, a label is unknown, or (``length_policy:
            fail``) an example is too long.
    """
    d = cfg.data
    if d.prepared is not None:
        splits = _load_prepared(resolve_path(base_dir, d.prepared), require_test)
    elif d.mix is not None:
        splits = _prepare_mix(cfg, base_dir, require_test, tokenizer)
    else:
        splits = _prepare_files(cfg, base_dir, require_test, tokenizer)
    splits.warnings.extend(w for w in small_test_warnings(cfg, splits) if w not in splits.warnings)
    return splits


def small_test_warnings(cfg: Config, splits: Splits) -> list[str]:
    """Warnings for a test split (or a mix task's test rows) under ``eval.min_test_examples``."""
    least, cap = cfg.eval.min_test_examples, cfg.eval.max_examples
    scored = min(len(splits.test), cap) if cap else len(splits.test)
    out = []
    if 0 < scored < least:
        capped = f" (eval.max_examples {cap})" if cap and cap < len(splits.test) else ""
        out.append(f"the test split has {scored} examples{capped}, under eval.min_test_examples {least}: too few for "
                   "bootstrap intervals; proportions get exact intervals and tests, other metrics none, and the "
                   "verdict is likely inconclusive. Add test data (data.test) or raise data.split.test")
    for tag, info in (splits.tasks or {}).items():
        if 0 < info.get("test", least) < least:
            out.append(f"task {tag}: {info['test']} test examples, under eval.min_test_examples {least}: its per-task "
                       "figures have wide or no intervals")
    return out


def _prepare_files(cfg: Config, base_dir: Path, require_test: bool, tokenizer: Any) -> Splits:
    """``data.train`` (and optionally ``data.validation``/``data.test``) files: see :func:`prepare_splits`."""
    d = cfg.data
    task = cfg.objective.task
    train_paths = resolve_paths(base_dir, d.train)
    train_path = train_paths[0]
    loaded = [load_examples(train_paths, d.format, d.columns, "train")]
    fmt_name = loaded[0].format
    removed_rows: list[Removed] = []
    warnings: list[str] = []
    conflicts = 0
    pii: Counter[str] = Counter()
    counter = TokenCounter(tokenizer) if tokenizer is not None else None

    def gate(examples: list[Example], name: str) -> list[Example]:
        nonlocal conflicts
        if d.unreviewed == "exclude":
            waiting = [ex for ex in examples if ex.meta.get("needs_review") is True]
            removed_rows.extend(Removed("needs_review", ex.id, name, None, ex.to_dict()) for ex in waiting)
            examples = [ex for ex in examples if ex.meta.get("needs_review") is not True]
        cleaned = [clean_example(ex, d.clean) for ex in examples]
        scrubbed, dropped, found = scrub_pii(cleaned, d.pii, name)
        if counter is not None:
            counter.submit(scrubbed)  # counted in the background while duplicates and leakage are checked
        kept, removed, n_conflicts = deduplicate(scrubbed, d.dedup, name)
        removed_rows.extend(dropped + removed)
        conflicts += n_conflicts
        pii.update(found)
        return kept

    train = gate(loaded[0].examples, "train")
    if task == "classification" and FORMATS[fmt_name].required != ("text", "label"):
        raise DataError(f"task 'classification' needs labelled rows, but the data is in '{fmt_name}' format "
                        "(expected fields text and label)", path=train_path)
    if d.max_examples is not None and len(train) > d.max_examples:
        rng = random.Random(cfg.project.seed)
        keep = set(rng.sample(range(len(train)), d.max_examples))
        removed_rows += [Removed("data.max_examples", ex.id, "train", None, ex.to_dict())
                         for i, ex in enumerate(train) if i not in keep]
        train = [ex for i, ex in enumerate(train) if i in keep]

    if d.validation is not None and d.test is not None:
        val = load_examples(resolve_path(base_dir, d.validation), fmt_name, d.columns, "validation")
        tst = load_examples(resolve_path(base_dir, d.test), fmt_name, d.columns, "test")
        loaded += [val, tst]
        validation, test = gate(val.examples, "validation"), gate(tst.examples, "test")
    else:
        # Generated rows (they carry provenance) only ever train: evaluation stays on real data.
        generated = [ex for ex in train if "provenance" in ex.meta]
        real = [ex for ex in train if "provenance" not in ex.meta]
        fr = (d.split.train, d.split.validation, d.split.test)
        by_passage = d.split.keep_passages_together and FORMATS[fmt_name].passages
        train, validation, test = split_examples(real, fr, cfg.project.seed, stratify=task == "classification",
                                                 by_passage=by_passage)
        train += generated
    leaks = 0
    if d.dedup.near or d.dedup.exact:
        found = find_leakage(train, {"validation": validation, "test": test}, d.dedup)
        leaked = found["validation"][1] + found["test"][1]
        leaks = len(leaked)
        if d.dedup.leakage == "remove":
            validation, test = found["validation"][0], found["test"][0]
            removed_rows += leaked
    rejected = [r for part in loaded for r in part.rejected]
    overlap = shared_passages(train, test)
    if overlap:
        warnings.append(f"{overlap} test examples ask about a passage (context) that training examples also have: not "
                        "leakage (the questions differ), but easier than questions about unseen passages")

    labels: list[str] | None = None
    if task == "classification":
        raws = {key: value for part in loaded for key, value in part.raws.items()}
        labels = list(d.labels) if d.labels else sorted({ex.label for ex in train if ex.label is not None})
        known = set(labels)
        kept = {}
        for name, part in (("train", train), ("validation", validation), ("test", test)):
            kept[name] = [ex for ex in part if ex.label in known]
            for ex in part:
                if ex.label not in known:
                    source, raw = raws.get((ex.source, ex.line), (ex.source, json.dumps(ex.to_dict(), ensure_ascii=False)))
                    rejected.append(Rejected(source, ex.line, f"field 'label': unknown label {ex.label!r} "
                                             f"(known: {', '.join(labels)})", raw, name))
        train, validation, test = kept["train"], kept["validation"], kept["test"]
    if d.strict and rejected:
        raise DataError(_strict_message(rejected))
    template = d.system_prompt if d.system_prompt is not None else get_task(task).system_prompt
    if cfg.adapter.head == "classify" and d.system_prompt is None:
        template = None  # a classification head knows the labels: the prompt is the text alone
    system_prompt = None if FORMATS[fmt_name].plain else render_system_prompt(template, labels)

    lengths: dict[str, Any] = {}
    length_values: list[int] = []
    preview = None
    if tokenizer is not None:
        measured = measure_splits(tokenizer, train, validation, test, system_prompt, cfg.model.max_seq_len,
                                  d.length_policy, counter)
        (train, validation, test), lengths, length_values = measured.parts, measured.summary, measured.values
        removed_rows += [Removed("length", ex.id, name, None, ex.to_dict()) for name, exs in measured.dropped.items()
                         for ex in exs]
        if train:
            preview = render_preview(tokenizer, train[0], system_prompt, cfg.model.max_seq_len)

    balance: dict[str, Any] = {}
    class_weights, copies = None, 0
    if labels is not None:
        bal = balance_train(train, test, labels, d.balance, cfg.project.seed)
        train, copies, class_weights, balance = bal.train, bal.copies, bal.class_weights, bal.report
        removed_rows += [Removed("balance", ex.id, "train", None, ex.to_dict()) for ex in bal.dropped]
        warnings += bal.warnings
    if not train:
        raise DataError(f"no usable training rows ({_rejected_summary(rejected)})", path=train_path)
    if not test and require_test:
        raise DataError("the test split is empty: add data or raise data.split.test", path=train_path)
    sources = [src for part in loaded for src in part.sources]
    fmt = FORMATS[fmt_name]
    return Splits(train, validation, test, fmt_name, labels, system_prompt, sources,
                  rejected=rejected, rows_read=sum(part.rows_read for part in loaded), removed_rows=removed_rows,
                  warnings=[w for part in loaded for w in part.warnings] + warnings, conflicts=conflicts,
                  leakage_found=leaks, pii=dict(pii.most_common()), pii_policy=d.pii.policy,
                  columns={f: d.columns.get(f, f) for f in fmt.required + fmt.optional}, lengths=lengths,
                  length_values=length_values, balance=balance, class_weights=class_weights, oversampled=copies,
                  preview=preview)


def _prepare_mix(cfg: Config, base_dir: Path, require_test: bool, tokenizer: Any) -> Splits:
    """``data.mix``: each source prepared as if it were the only ``data.train``, then combined and mixed.

    Raises:
        DataError: A source's data is invalid (the message names the source), an example is too
            long under ``length_policy: fail``, or (when required) the test split is empty.
    """
    parts: dict[str, Splits] = {}
    for i, source in enumerate(cfg.data.mix or []):
        try:
            parts[source.task] = prepare_splits(source_config(cfg, source), base_dir, require_test=False)
        except DataError as exc:
            raise DataError(f"data.mix[{i}] (task {source.task!r}): {exc}") from None
    m = combine_sources(cfg, parts, tokenizer)
    if not m.train:
        raise DataError("no usable training rows in any source of data.mix (see data.length_policy)")
    if not m.test and require_test:
        raise DataError("the test split is empty: add data or raise data.split.test")
    return Splits(m.train, m.validation, m.test, "mix", m.labels, None, m.sources, rejected=m.rejected,
                  rows_read=m.rows_read, removed_rows=m.removed, warnings=m.warnings, conflicts=m.conflicts,
                  leakage_found=m.leakage_found, pii=m.pii, pii_policy=cfg.data.pii.policy, lengths=m.lengths,
                  length_values=m.length_values, balance=m.balance, oversampled=m.copies, preview=m.preview, tasks=m.tasks)


def _load_prepared(folder: Path, require_test: bool) -> Splits:
    """Splits written by ``tunesmith data prepare``.

    Raises:
        DataError: The folder holds no prepared splits, or (when required) no test examples.
    """
    splits = Splits.load(folder)
    if not splits.train:
        raise DataError("the prepared training split is empty", path=folder / "train.jsonl")
    if require_test and not splits.test:
        raise DataError("the prepared test split is empty", path=folder / "test.jsonl")
    return splits


def _rejected_summary(rejected: list[Rejected]) -> str:
    if not rejected:
        return "no rows were read"
    by_reason = Counter(r.kind for r in rejected)
    return f"{len(rejected)} set aside: " + ", ".join(f"{n} {k}" for k, n in by_reason.most_common())


def _strict_message(rejected: list[Rejected]) -> str:
    lines = [f"data.strict is on and {_rejected_summary(rejected)}; the first ones:"]
    lines += [f"  {r.source}:{r.line}: {r.reason}" for r in rejected[:5]]
    return "\n".join(lines)


def guess_task(path: Path, data_format: str = "auto", columns: dict[str, str] | None = None) -> str:
    """The task a data file's format is made for: the named format's, else the one its first readable row fits.

    Args:
        path: A data file or folder.
        data_format: ``data.format`` as given (``auto`` detects it from the fields).
        columns: ``data.columns``, the user's names for the format's fields.

    Raises:
        DataError: No readable row, or no format fits it.
    """
    if data_format != "auto":
        return FORMATS[data_format].tasks[0]
    for file in data_files(path):
        for record in read_records(file):
            if record.row is not None:
                return FORMATS[detect_format(set(record.row), columns or {})].tasks[0]
    raise DataError("no readable rows to guess the task from", path=path)
