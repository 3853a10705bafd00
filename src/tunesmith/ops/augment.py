"""Synthetic data: paraphrases of seed examples and new examples in their style (self-instruct).

A generator is the base model, any local model folder, or an OpenAI-compatible endpoint. Every
generated row carries its provenance and ``needs_review: true``; ``data.unreviewed`` keeps such
rows out of training until a person has approved them (``tunesmith data review``). Generated
rows that repeat a seed or each other (exactly or nearly) are filtered out and counted.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tunesmith.config import Config, DedupConfig
from tunesmith.data.examples import Example
from tunesmith.data.formats import example_to_row
from tunesmith.data.io import read_jsonl, write_jsonl
from tunesmith.data.prepare import prepare_splits
from tunesmith.data.quality import deduplicate, find_leakage
from tunesmith.errors import UserError
from tunesmith.inference.clients import Generator

PARAPHRASE_SYSTEM = "You rewrite texts. Reply with the rewritten text only, nothing else."
PARAPHRASE_USER = "Rewrite this text in different words. Keep its meaning, its language and its details.\n\n{text}"
NEW_INPUT_SYSTEM = "You write realistic examples for a dataset. Reply with the new example only, nothing else."
NEW_INPUT_USER = "Here are examples{kind}:\n{examples}\n\nWrite one new example of the same kind, different from all of these."


@dataclass
class Generated:
    """The outcome of one augmentation.

    Attributes:
        rows: The kept rows in the data's format, each with ``needs_review`` and ``provenance``.
        filtered: Candidates dropped, each with its reason and text.
        counts: Candidates asked for, kept, and dropped by reason.
    """

    rows: list[dict[str, Any]]
    filtered: list[dict[str, Any]]
    counts: dict[str, Any]


def _clean(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'“”":
        text = text[1:-1].strip()
    return text


def paraphrase_candidates(seeds: Sequence[Example], generator: Generator, per_seed: int, seed: int,
                          temperature: float) -> list[tuple[Example, str]]:
    """Ask for ``per_seed`` rewrites of each seed's prompt; the answer or label stays the seed's."""
    asks = [(ex, [{"role": "system", "content": PARAPHRASE_SYSTEM},
                  {"role": "user", "content": PARAPHRASE_USER.format(text=ex.prompt)}])
            for ex in seeds for _ in range(per_seed)]
    texts = generator.complete([m for _, m in asks], temperature, seed)
    return [(replace(ex, prompt=_clean(t), turns=None, meta={"seeds": [ex.id]}), "paraphrase")
            for (ex, _), t in zip(asks, texts)]


def self_instruct_candidates(seeds: Sequence[Example], generator: Generator, n: int, seed: int, temperature: float,
                             system_prompt: str | None, shots: int = 3) -> list[tuple[Example, str]]:
    """New examples in the style of a few seeds each: labelled data gets a new input per label;
    other data a new input, then the generator's answer to it."""
    rng = random.Random(seed)
    by_label: dict[str | None, list[Example]] = {}
    for ex in seeds:
        by_label.setdefault(ex.label, []).append(ex)
    groups = sorted(by_label, key=str)
    picks = []
    for i in range(n):
        group = by_label[groups[i % len(groups)]]
        picks.append(rng.sample(group, min(shots, len(group))))
    asks = []
    for shots_ in picks:
        kind = f" of messages labelled '{shots_[0].label}'" if shots_[0].label is not None else ""
        listing = "\n".join(f"- {ex.prompt}" for ex in shots_)
        asks.append([{"role": "system", "content": NEW_INPUT_SYSTEM},
                     {"role": "user", "content": NEW_INPUT_USER.format(kind=kind, examples=listing)}])
    inputs = [_clean(t) for t in generator.complete(asks, temperature, seed)]
    if all(shots_[0].label is not None for shots_ in picks):
        return [(replace(s[0], prompt=t, turns=None, meta={"seeds": [x.id for x in s]}), "self_instruct")
                for s, t in zip(picks, inputs)]
    sys_msg = [{"role": "system", "content": system_prompt}] if system_prompt else []
    answers = generator.complete([sys_msg + [{"role": "user", "content": t}] for t in inputs], temperature, seed + 1)
    return [(replace(s[0], prompt=t, target=_clean(a), system=None, turns=None, meta={"seeds": [x.id for x in s]}),
             "self_instruct") for s, t, a in zip(picks, inputs, answers)]


def filter_candidates(seeds: Sequence[Example], candidates: Sequence[tuple[Example, str]], dedup: DedupConfig,
                      ) -> tuple[list[tuple[Example, str]], list[dict[str, Any]]]:
    """Drop empty candidates, those that repeat a seed's input, and those that repeat each other.

    Returns:
        (kept (example, method) pairs, dropped rows with ``reason``).
    """
    dropped: list[dict[str, Any]] = []
    numbered = []
    for i, (ex, method) in enumerate(candidates):
        ex = replace(ex, id=f"gen-{i + 1}")
        if not ex.prompt or not ex.target:
            dropped.append({"reason": "empty", "method": method, "text": ex.prompt})
        else:
            numbered.append((ex, method))
    method_of = {ex.id: m for ex, m in numbered}
    clean, leaked = find_leakage(list(seeds), {"gen": [ex for ex, _ in numbered]}, dedup)["gen"]
    dropped += [{"reason": "repeats a seed", "method": method_of[r.id], "seed_id": r.kept_id,
                 "text": r.example["prompt"]} for r in leaked]
    # Among generated rows the input alone decides: the same input with another answer is a repeat too.
    by_id = {ex.id: ex for ex in clean}
    firsts, removed, _ = deduplicate([replace(ex, target="", label=None) for ex in clean], dedup, "generated")
    dropped += [{"reason": "repeats another generated row", "method": method_of[r.id], "text": r.example["prompt"]}
                for r in removed]
    return [(by_id[ex.id], method_of[ex.id]) for ex in firsts], dropped


def augment(seeds: Sequence[Example], generator: Generator, fmt_name: str, columns: dict[str, str], *,
            paraphrases: int = 0, new: int = 0, seed: int = 0, temperature: float = 0.8,
            system_prompt: str | None = None, dedup: DedupConfig | None = None) -> Generated:
    """Generate, filter and format synthetic rows from seed examples.

    Args:
        seeds: The examples to start from (usually the training split).
        generator: Who writes the new text.
        fmt_name: The data's format; rows are written in it so they can sit next to the user's data.
        columns: The user's column mapping.
        paraphrases: Rewrites per seed.
        new: New examples (self-instruct style) in total.
        seed: Seed for the choice of shots and for sampling.
        temperature: Sampling temperature.
        system_prompt: The task's system message, used when the generator answers new inputs.
        dedup: Thresholds for the repeat filters.

    Returns:
        The kept rows (``needs_review: true`` with provenance), the dropped ones, and counts.
    """
    dedup = dedup or DedupConfig()
    cands = paraphrase_candidates(seeds, generator, paraphrases, seed, temperature) if paraphrases else []
    if new:
        cands += self_instruct_candidates(seeds, generator, new, seed, temperature, system_prompt)
    kept, dropped = filter_candidates(seeds, cands, dedup)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows = []
    for ex, method in kept:
        row = example_to_row(fmt_name, ex, columns)
        row["needs_review"] = True
        row["provenance"] = {"method": method, "seed_ids": ex.meta["seeds"],
                             "generator": generator.name, "temperature": temperature, "seed": seed, "created": created}
        rows.append(row)
    counts = {"asked": len(cands), "kept": len(rows), "dropped": dict(Counter(d["reason"] for d in dropped)),
              "by_method": dict(Counter(m for _, m in kept))}
    return Generated(rows, dropped, counts)


def augment_data(cfg: Config, base_dir: Path, generator: Generator, out: Path, *, paraphrases: int, new: int,
                 temperature: float, max_seeds: int | None, append: bool) -> Generated:
    """Generate rows from the training split and write them (``needs_review: true``) to ``out``.

    Dropped candidates go to ``<out>.filtered.jsonl`` with their reason.

    Raises:
        UserError: ``out`` exists and ``append`` is off, or nothing was asked for.
    """
    if not paraphrases and not new:
        raise UserError("ask for --paraphrases N (per seed) and/or --new N")
    if out.exists() and not append:
        raise UserError(f"{out} exists: pass --append to add to it, or choose another --out")
    if cfg.data.mix is not None:
        raise UserError("data augment writes rows in one dataset's format; with data.mix, run it with "
                        "--set data.mix=null --set data.train=SOURCE (and that source's data.format/columns)")
    splits = prepare_splits(cfg, base_dir, require_test=False)
    seeds = splits.train
    if max_seeds is not None and len(seeds) > max_seeds:
        seeds = random.Random(cfg.project.seed).sample(seeds, max_seeds)
    result = augment(seeds, generator, splits.format, cfg.data.columns, paraphrases=paraphrases, new=new,
                     seed=cfg.project.seed, temperature=temperature, system_prompt=splits.system_prompt, dedup=cfg.data.dedup)
    previous = read_jsonl(out) if out.exists() else []
    write_jsonl(out, previous + result.rows)
    write_jsonl(out.with_name(out.stem + ".filtered.jsonl"), result.filtered)
    return result

