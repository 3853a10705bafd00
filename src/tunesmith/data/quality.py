"""Quality gates: cleaning, PII, exact and near duplicates, conflicting answers, train/test leakage.

Every row a gate takes out is recorded as a :class:`Removed` with the rule that removed it
and the example it duplicates, so the accounting of rows read always adds up.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import string
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


from tunesmith.config import CleanConfig, DedupConfig, PiiConfig
from tunesmith.data.examples import Example
from tunesmith.data.minhash import BandIndex, signatures
from tunesmith.data.pii import find_pii, presidio_detector, redact

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u3000]+")
_BLANK_LINES = re.compile(r"\n\s*\n\s*\n+")
_CITATIONS = re.compile(r"\s?\[\d+(?:\s*[,–-]\s*\d+)*\]")
_PUNCT = str.maketrans("", "", string.punctuation)


@dataclass(frozen=True)
class Removed:
    """A row removed on purpose by a named rule.

    Attributes:
        rule: ``duplicate_exact``, ``duplicate_near``, ``conflict``, ``leakage``, ``pii`` or ``data.max_examples``.
        id: The removed example's id.
        split: Where it was: the input it came from, or the split it was taken out of.
        kept_id: The example it duplicates or conflicts with.
        example: The removed example itself.
    """

    rule: str
    id: str
    split: str
    kept_id: str | None
    example: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return dataclasses.asdict(self)


def clean_text(text: str, cfg: CleanConfig) -> str:
    """Apply the configured cleaning steps to one text."""
    if cfg.unicode_nfc:
        text = unicodedata.normalize("NFC", text)
    if cfg.strip_control:
        text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    for pattern in cfg.remove_patterns:
        text = re.sub(pattern, "", text, flags=re.MULTILINE)
    if cfg.remove_citations:
        text = _CITATIONS.sub("", text)
    if cfg.whitespace:
        text = _BLANK_LINES.sub("\n\n", "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))).strip()
    if cfg.lowercase:
        text = text.lower()
    return text


def clean_example(ex: Example, cfg: CleanConfig, clean_label: bool = False) -> Example:
    """The example with its prompt, answer, system message and turns cleaned (labels are left as they are)."""
    turns = [{**t, "content": clean_text(t["content"], cfg)} for t in ex.turns] if ex.turns else None
    target = ex.target if (ex.label is not None and not clean_label) else clean_text(ex.target, cfg)
    return dataclasses.replace(ex, prompt=clean_text(ex.prompt, cfg), target=target, turns=turns,
                               system=None if ex.system is None else clean_text(ex.system, cfg),
                               context=None if ex.context is None else clean_text(ex.context, cfg))


def scrub_pii(examples: Sequence[Example], cfg: PiiConfig, split: str) -> tuple[list[Example], list[Removed], Counter[str]]:
    """Detect personal data and secrets in each example and apply the policy.

    Args:
        examples: Cleaned examples.
        cfg: The PII policy and types.
        split: Name recorded on removed rows.

    Returns:
        (kept examples, rows removed by the ``pii`` rule, count of detections by type).
    """
    counts: Counter[str] = Counter()
    if cfg.policy == "off":
        return list(examples), [], counts
    ner = presidio_detector(cfg.ner_language, cfg.ner_score) if cfg.ner == "presidio" else None
    kept, removed = [], []
    for ex in examples:
        texts = {"prompt": ex.prompt, "system": ex.system or ""}
        if ex.label is None:
            texts["target"] = ex.target
        spans = {k: find_pii(v, cfg.types, ner) for k, v in texts.items()}
        # The context is part of the prompt (counted there) and is redacted the same way on its own.
        context_spans = find_pii(ex.context, cfg.types, ner) if ex.context else []
        turn_spans = [find_pii(t["content"], cfg.types, ner) for t in ex.turns] if ex.turns else []
        found = [sp for group in [*spans.values(), *turn_spans] for sp in group]
        counts.update(sp.type for sp in found)
        if not found or cfg.policy == "report":
            kept.append(ex)
        elif cfg.policy == "drop":
            removed.append(Removed("pii", ex.id, split, None, {**ex.to_dict(), "pii": sorted({sp.type for sp in found})}))
        else:
            turns = ([{**t, "content": redact(t["content"], sp)} for t, sp in zip(ex.turns, turn_spans)]
                     if ex.turns else None)
            kept.append(dataclasses.replace(
                ex, prompt=redact(ex.prompt, spans["prompt"]), system=None if ex.system is None else redact(ex.system, spans["system"]),
                target=redact(ex.target, spans["target"]) if "target" in spans else ex.target, turns=turns,
                context=redact(ex.context, context_spans) if ex.context else ex.context))
    return kept, removed, counts


def _key(text: str) -> str:
    """Normalised text for duplicate detection: case, punctuation and spacing ignored."""
    return " ".join(text.lower().translate(_PUNCT).split())


def context_key(ex: Example) -> str:
    """What an example shares with others without being the same example: its system message and its
    context (a QA passage, an alpaca instruction with an input), normalised. Empty when it has neither."""
    if not ex.system and not ex.context:
        return ""
    return _key(ex.system or "") + "\x00" + _key(ex.context or "")


def own_input(ex: Example) -> str:
    """The example's own input, normalised: earlier turns and the prompt without its shared context."""
    turns = ex.turns[:-1] if ex.turns else []
    prompt = ex.prompt
    if ex.context and ex.context in prompt:
        prompt = prompt.replace(ex.context, "", 1)
    return _key(" ".join([*(t["content"] for t in turns), prompt]))


def _in_group(group: str, keys: Sequence[bytes]) -> list[bytes]:
    """LSH band keys that only match examples of the same context group."""
    if not group:
        return list(keys)
    tag = hashlib.blake2b(group.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return [tag + k for k in keys]


def deduplicate(examples: Sequence[Example], cfg: DedupConfig, split: str) -> tuple[list[Example], list[Removed], int]:
    """Remove exact and near duplicates (first occurrence kept) and flag conflicting answers.

    Two examples are the same example when their own inputs and answers match (exactly, or nearly
    for near duplicates) and they share the same context group (:func:`context_key`): questions
    about one passage, or inputs under one system prompt or instruction, are compared with each
    other on what differs; a shared passage, system prompt or instruction alone never makes two
    examples duplicates.

    Args:
        examples: Examples in file order.
        cfg: Dedup settings.
        split: Name recorded on removed rows.

    Returns:
        (kept examples, removed rows, number of conflicting inputs found).
    """
    kept: list[tuple[Example, tuple[str, str], str]] = []  # with (group, own input) and answer, computed once
    removed: list[Removed] = []
    seen: dict[tuple[tuple[str, str], str], str] = {}
    answers_by_input: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for ex in examples:
        inp, ans = (context_key(ex), own_input(ex)), _key(ex.target)
        if cfg.exact and (inp, ans) in seen:
            removed.append(Removed("duplicate_exact", ex.id, split, seen[(inp, ans)], ex.to_dict()))
            continue
        seen[(inp, ans)] = ex.id
        answers_by_input[inp].setdefault(ans, ex.id)
        kept.append((ex, inp, ans))
    conflicting = {inp for inp, answers in answers_by_input.items() if len(answers) > 1}
    if conflicting and cfg.conflicts == "drop":
        first_of = {inp: next(iter(a.values())) for inp, a in answers_by_input.items()}
        removed += [Removed("conflict", ex.id, split, first_of[inp], ex.to_dict()) for ex, inp, _ in kept if inp in conflicting]
        kept = [item for item in kept if item[1] not in conflicting]
    if cfg.near:
        index = BandIndex(cfg.near_threshold, cfg.num_perm)
        sigs = signatures([f"{inp[1]} || {ans}" for _, inp, ans in kept], cfg.num_perm, cfg.shingle_chars)
        survivors = []
        for i, (item, keys) in enumerate(zip(kept, index.band_keys(sigs))):
            keys = _in_group(item[1][0], keys)
            hit = index.first_match(keys)
            if hit is not None:
                removed.append(Removed("duplicate_near", item[0].id, split, kept[hit][0].id, item[0].to_dict()))
                continue
            index.insert(i, keys)
            survivors.append(item)
        kept = survivors
    return [ex for ex, _, _ in kept], removed, len(conflicting)


def shared_passages(train: Sequence[Example], evaluation: Sequence[Example]) -> int:
    """How many evaluation examples ask about a context (passage) that training examples also have.

    Not leakage (the questions differ), but such test questions are easier than ones about unseen
    passages: reported so that a reader can tell.
    """
    seen = {_key(ex.context) for ex in train if ex.context}
    return sum(1 for ex in evaluation if ex.context and _key(ex.context) in seen)


def find_leakage(train: Sequence[Example], evaluation: dict[str, Sequence[Example]],
                 cfg: DedupConfig) -> dict[str, tuple[list[Example], list[Removed]]]:
    """Split each evaluation split into examples that are clean and those whose input nearly duplicates a training input.

    As for duplicates, inputs are compared within one context group on the example's own input: a
    test question leaks when it repeats a training question about the same passage, not when it
    only shares the passage (:func:`shared_passages` counts those).

    The training inputs are indexed once (exact keys and, with ``cfg.near``, a MinHash LSH)
    and every evaluation split is queried against that one index.

    Args:
        train: The training split.
        evaluation: Evaluation splits by name (validation, test).
        cfg: Dedup settings (threshold and shingles).

    Returns:
        For each split name: (examples without leakage, the leaking ones as ``leakage`` rows).
    """
    index = BandIndex(cfg.near_threshold, cfg.num_perm)
    exact: dict[tuple[str, str], str] = {}
    groups = [context_key(ex) for ex in train]
    inputs = [own_input(ex) for ex in train]
    for i, inp in enumerate(inputs):
        exact.setdefault((groups[i], inp), train[i].id)
    if cfg.near:
        for i, keys in enumerate(index.band_keys(signatures(inputs, cfg.num_perm, cfg.shingle_chars))):
            index.insert(i, _in_group(groups[i], keys))
    out: dict[str, tuple[list[Example], list[Removed]]] = {}
    for split, examples in evaluation.items():
        kept, leaked = [], []
        groups = [context_key(ex) for ex in examples]
        inputs = [own_input(ex) for ex in examples]
        band_keys = index.band_keys(signatures(inputs, cfg.num_perm, cfg.shingle_chars)) if cfg.near else [None] * len(inputs)
        for ex, group, inp, keys in zip(examples, groups, inputs, band_keys):
            hit = exact.get((group, inp))
            if hit is None and keys is not None:
                first = index.first_match(_in_group(group, keys))
                hit = None if first is None else train[first].id
            if hit is not None:
                leaked.append(Removed("leakage", ex.id, split, hit, ex.to_dict()))
            else:
                kept.append(ex)
        out[split] = (kept, leaked)
    return out
