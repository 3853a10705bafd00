"""Multi-task data (``data.mix``): several sources, each with a task tag, a task type and a mixing weight.

Each source is prepared exactly as a project whose only ``data.train`` it was: read and validated
in its own format and columns, cleaned, de-duplicated, scrubbed, split 80/10/10 (so every task
appears in validation and test in proportion) and checked for leakage. Its examples are then
tagged with ``meta["task"]`` and given the source's system prompt, and the sources are combined.
Only the training split is resampled to follow the weights; validation and test never are.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tunesmith.config import Config, MixSource
from tunesmith.data.balance import balance_train
from tunesmith.data.encode import render_preview
from tunesmith.data.examples import Example, Rejected
from tunesmith.data.lengths import measure_splits
from tunesmith.data.quality import Removed


def source_type(cfg: Config, source: MixSource) -> str:
    """The kind of task a source holds: its ``task_type``, else the objective's task."""
    return source.task_type or cfg.objective.task


def source_config(cfg: Config, source: MixSource) -> Config:
    """The project config as it would read with ``source`` as its only ``data.train``.

    The source's format, columns, system prompt, labels and task type replace the project's;
    everything else (cleaning, de-duplication, PII, split fractions, seed) is shared.
    """
    data = cfg.data.model_copy(update={"train": source.path, "format": source.format, "columns": source.columns,
                                       "system_prompt": source.system_prompt, "labels": source.labels, "mix": None})
    # The objective's metric may not fit this source's task type; preparing the data never reads it.
    objective = cfg.objective.model_copy(update={"task": source_type(cfg, source), "metric": None})
    return cfg.model_copy(update={"data": data, "objective": objective})


def tag_examples(examples: Sequence[Example], tag: str, system_prompt: str | None) -> list[Example]:
    """The examples of one source, tagged for the mix.

    Args:
        examples: The source's examples.
        tag: The source's task tag, stored as ``meta["task"]`` (replacing a ``task`` column of the data).
        system_prompt: The source's system message, given to every example without its own.

    Returns:
        New examples whose ids start with ``tag/``: two sources may share file names, and ids
        default to file name and line.
    """
    return [dataclasses.replace(ex, id=f"{tag}/{ex.id}", meta={**ex.meta, "task": tag},
                                system=ex.system if ex.system is not None else system_prompt) for ex in examples]


def mix_counts(available: dict[str, int], weights: dict[str, float]) -> dict[str, int]:
    """How many training examples each task gets so that the shares follow the weights.

    The total stays the number of training examples available, so an epoch costs what it would
    without the mix. Shares are rounded by the largest-remainder method (the counts add up to the
    total exactly), and every task keeps at least one example.

    Args:
        available: Training examples per task tag (each at least 1).
        weights: Mixing weight per task tag (each > 0).

    Returns:
        Training examples per task tag.
    """
    total, weight_sum = sum(available.values()), sum(weights[t] for t in available)
    exact = {t: total * weights[t] / weight_sum for t in available}
    counts = {t: math.floor(x) for t, x in exact.items()}
    by_remainder = sorted(exact, key=lambda t: (counts[t] - exact[t], t))
    for t in by_remainder[: total - sum(counts.values())]:
        counts[t] += 1
    return {t: max(n, 1) for t, n in counts.items()}


@dataclass
class Mixed:
    """The training split after mixing.

    Attributes:
        train: The training examples, copies included, in a seeded shuffled order.
        dropped: Examples left out of tasks weighted below their size (rule ``mix``).
        copies: Copies added to tasks weighted above their size (not rows read).
        counts: Per task: examples ``available`` before mixing, ``train`` after, and ``share`` of the training split.
    """

    train: list[Example]
    dropped: list[Example]
    copies: int
    counts: dict[str, dict[str, Any]]


def mix_train(train: Sequence[Example], weights: dict[str, float], seed: int) -> Mixed:
    """Resample the training split so that each task's share follows its weight.

    Deterministic over- and undersampling with the project seed: a task that needs ``k`` examples
    and has ``n`` keeps a seeded sample of ``k`` when ``k <= n``; otherwise every example appears
    ``k // n`` times and a seeded sample of ``k % n`` once more, so no example is repeated more
    than one time above any other of its task. Copies get ids ending in ``#copyN``.

    Args:
        train: Tagged training examples (``meta["task"]`` set).
        weights: Mixing weight per task tag.
        seed: The project seed.

    Returns:
        The mixed training split, what was dropped, and the counts per task.
    """
    by_task: dict[str, list[Example]] = defaultdict(list)
    for ex in train:
        by_task[ex.meta["task"]].append(ex)
    want = mix_counts({t: len(group) for t, group in by_task.items()}, weights)
    rng = random.Random(f"{seed}:mix")
    out: list[Example] = []
    dropped: list[Example] = []
    copies = 0
    for tag in sorted(by_task):
        group, k = by_task[tag], want[tag]
        if k <= len(group):
            keep = set(rng.sample(range(len(group)), k))
            out += [ex for i, ex in enumerate(group) if i in keep]
            dropped += [ex for i, ex in enumerate(group) if i not in keep]
            continue
        rounds, extra = divmod(k, len(group))
        out += group
        out += [dataclasses.replace(ex, id=f"{ex.id}#copy{r}") for r in range(1, rounds) for ex in group]
        out += [dataclasses.replace(ex, id=f"{ex.id}#copy{rounds}") for ex in rng.sample(group, extra)]
        copies += k - len(group)
    rng.shuffle(out)
    counts = {t: {"available": len(by_task[t]), "train": want[t], "share": round(want[t] / len(out), 4)}
              for t in sorted(by_task)}
    return Mixed(out, dropped, copies, counts)


class PreparedSource(Protocol):
    """What the mix reads of one source's own preparation (fields of ``tunesmith.data.prepare.Splits``)."""

    train: list[Example]
    validation: list[Example]
    test: list[Example]
    format: str
    labels: list[str] | None
    system_prompt: str | None
    sources: list[dict[str, str]]
    rejected: list[Rejected]
    rows_read: int
    removed_rows: list[Removed]
    warnings: list[str]
    conflicts: int
    leakage_found: int
    pii: dict[str, int]


def task_summary(cfg: Config, parts: dict[str, PreparedSource], mixed: Mixed, validation: Sequence[Example],
                 test: Sequence[Example]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """What describes each task of the mix, for the manifest, the evaluation and the reports.

    Args:
        cfg: The project config (``data.mix`` set).
        parts: Per task tag, that source's prepared splits.
        mixed: The mixed training split.
        validation: The combined validation split.
        test: The combined test split.

    Returns:
        Per task tag: type, weight, format, labels, system prompt, source files and counts per
        split; and warnings for tasks without validation or test examples.
    """
    held_out = {name: Counter(ex.meta["task"] for ex in part) for name, part in (("validation", validation), ("test", test))}
    out, warnings = {}, []
    for source in cfg.data.mix or []:
        part, tag = parts[source.task], source.task
        out[tag] = {"type": source_type(cfg, source), "weight": source.weight, "format": part.format,
                    "labels": part.labels, "system_prompt": part.system_prompt,
                    "sources": [s["path"] for s in part.sources],
                    **mixed.counts.get(tag, {"available": 0, "train": 0, "share": 0.0}),
                    "validation": held_out["validation"][tag], "test": held_out["test"][tag]}
        warnings += [f"task {tag!r} has no {name} examples: add data to {source.path} or raise data.split.{name}"
                     for name in ("validation", "test") if not held_out[name][tag] and getattr(cfg.data.split, name) > 0]
        if tag not in mixed.counts:
            warnings.append(f"task {tag!r} has no training examples left (data.length_policy dropped them all)")
    return out, warnings


@dataclass
class Combined:
    """The sources of a mix as one set of splits (the fields ``Splits`` is built from).

    Attributes:
        train: The mixed training split.
        validation: Every source's validation examples, tagged.
        test: Every source's test examples, tagged.
        labels: The union of the classification sources' labels, or None without one.
        sources: Every file read, with its SHA-256.
        rejected: Rows set aside by any source.
        rows_read: Rows read by all sources.
        removed: Rows removed by any source, for length, or by the mix (rule ``mix``).
        warnings: The sources' warnings and the mix's.
        conflicts: Conflicts found, summed over the sources.
        leakage_found: Leaking evaluation examples, summed over the sources.
        pii: Personal data found, by type, summed over the sources.
        lengths: Token-length summary per split (with a tokenizer).
        length_values: Every kept example's token length.
        balance: Label counts of the labelled training (after mixing) and test examples.
        copies: Copies the mix added to the training split.
        preview: The first task's rendered example.
        tasks: Per task tag, what describes it (:func:`task_summary`), with its own rendered example.
    """

    train: list[Example]
    validation: list[Example]
    test: list[Example]
    labels: list[str] | None
    sources: list[dict[str, str]]
    rejected: list[Rejected]
    rows_read: int
    removed: list[Removed]
    warnings: list[str]
    conflicts: int
    leakage_found: int
    pii: dict[str, int]
    lengths: dict[str, Any]
    length_values: list[int]
    balance: dict[str, Any]
    copies: int
    preview: dict[str, str] | None
    tasks: dict[str, dict[str, Any]]


def combine_sources(cfg: Config, parts: dict[str, PreparedSource], tokenizer: Any = None) -> Combined:
    """Tag every source's examples, measure them, and mix the training split by the weights.

    Lengths are measured (and ``data.length_policy`` applied) before mixing, so that the shares
    hold for what is trained on and no copy is measured twice.

    Args:
        cfg: The project config (``data.mix`` set).
        parts: Per task tag, the source prepared on its own (see :func:`source_config`), in ``data.mix`` order.
        tokenizer: The model's tokenizer; with it, token lengths are measured and one example per task rendered.

    Returns:
        The combined splits and their accounting: rows read = kept + set aside + removed, copies apart.

    Raises:
        DataError: ``length_policy: fail`` and an example is too long.
    """
    train, validation, test = ([ex for tag, p in parts.items() for ex in tag_examples(getattr(p, name), tag, p.system_prompt)]
                               for name in ("train", "validation", "test"))
    # Interleaved, so that eval.max_examples takes every task in proportion rather than the first sources.
    for name, part in (("validation", validation), ("test", test)):
        random.Random(f"{cfg.project.seed}:mix:{name}").shuffle(part)
    removed = [r for p in parts.values() for r in p.removed_rows]
    lengths: dict[str, Any] = {}
    values: list[int] = []
    previews: dict[str, dict[str, str]] = {}
    if tokenizer is not None:
        # Each example carries its task's system prompt, so none is given for the whole split.
        measured = measure_splits(tokenizer, train, validation, test, None, cfg.model.max_seq_len, cfg.data.length_policy)
        (train, validation, test), lengths, values = measured.parts, measured.summary, measured.values
        removed += [Removed("length", ex.id, name, None, ex.to_dict()) for name, exs in measured.dropped.items() for ex in exs]
        for tag in parts:
            first = next((ex for ex in train if ex.meta["task"] == tag), None)
            if first is not None:
                previews[tag] = render_preview(tokenizer, first, None, cfg.model.max_seq_len)
    mixed = mix_train(train, {s.task: s.weight for s in cfg.data.mix or []}, cfg.project.seed)
    removed += [Removed("mix", ex.id, "train", None, ex.to_dict()) for ex in mixed.dropped]
    tasks, warnings = task_summary(cfg, parts, mixed, validation, test)
    for tag, preview in previews.items():
        tasks[tag]["preview"] = preview
    found = {lab for p in parts.values() for lab in p.labels or []}
    labels = sorted(found) if found else None
    balance: dict[str, Any] = {}
    if labels is not None:
        bal = balance_train([ex for ex in mixed.train if ex.label is not None], [ex for ex in test if ex.label is not None],
                            labels, cfg.data.balance, cfg.project.seed)
        balance = bal.report  # its warnings came with each source, on the examples before mixing
    pii: Counter[str] = Counter()
    for p in parts.values():
        pii.update(p.pii)
    return Combined(mixed.train, validation, test, labels, [s for p in parts.values() for s in p.sources],
                    [r for p in parts.values() for r in p.rejected], sum(p.rows_read for p in parts.values()), removed,
                    [w for p in parts.values() for w in p.warnings] + warnings, sum(p.conflicts for p in parts.values()),
                    sum(p.leakage_found for p in parts.values()), dict(pii.most_common()), lengths, values, balance,
                    mixed.copies, next(iter(previews.values()), None), tasks)
