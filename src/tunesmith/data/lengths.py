"""Token lengths of examples as training will see them, and the policy for those too long.

Rendering every example through a Jinja chat template costs more than the tokenisation
itself, so single-turn examples are measured as: the template's own tokens (measured once
per system message by rendering a one-word example) plus the tokens of the prompt and the
answer, tokenised together in one batched call. A test pins this against the exact
encoding; conversations with several turns are encoded exactly.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tunesmith.data.encode import MIN_TEXT_TOKENS, encode_example
from tunesmith.data.examples import Example
from tunesmith.errors import DataError


@dataclass(frozen=True)
class LengthStats:
    """What was measured.

    Attributes:
        lengths: Token count of each example, in order.
        max_seq_len: The limit they were measured against.
        over: Indices of the examples longer than the limit.
    """

    lengths: list[int]
    max_seq_len: int
    over: list[int]

    def summary(self) -> dict[str, Any]:
        """Count, percentiles and the number over the limit."""
        if not self.lengths:
            return {"count": 0, "over_max_seq_len": 0, "max_seq_len": self.max_seq_len}
        ordered = sorted(self.lengths)

        def pct(p: float) -> int:
            return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

        return {"count": len(ordered), "min": ordered[0], "p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99),
                "max": ordered[-1], "mean": round(sum(ordered) / len(ordered), 1),
                "over_max_seq_len": len(self.over), "max_seq_len": self.max_seq_len}


def _template_overhead(tokenizer: Any, system: str | None, system_prompt: str | None) -> int:
    probe = Example(id="probe", prompt="a", target="b", system=system)
    enc = encode_example(tokenizer, probe, system_prompt, 1 << 30)
    return len(enc.input_ids) - 2 * len(tokenizer("a", add_special_tokens=False)["input_ids"])


def _texts(ex: Example) -> list[str]:
    """The texts of a single-turn example that are tokenised on their own (see the module notes)."""
    return [ex.prompt + " " + ex.target] if ex.plain else [ex.prompt, ex.target]


class TokenCounter:
    """Counts tokens of distinct texts, in background threads while other data work goes on.

    The Rust tokenizer releases the GIL, so counting the training texts overlaps the
    de-duplication and leakage checks that follow in the main thread.

    Args:
        tokenizer: The model's tokenizer.
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self._jobs: list[tuple[threading.Thread, dict[str, int]]] = []
        self._counts: dict[str, int] = {}

    def submit(self, examples: Sequence[Example]) -> None:
        """Start counting the texts of these examples."""
        texts = list(dict.fromkeys(t for ex in examples if not ex.turns for t in _texts(ex)))
        result: dict[str, int] = {}
        thread = threading.Thread(target=lambda: result.update(zip(texts, _count_tokens(self.tokenizer, texts))),
                                  name="tunesmith-tokens", daemon=True)
        thread.start()
        self._jobs.append((thread, result))

    def counts(self, texts: Sequence[str]) -> dict[str, int]:
        """Token counts of ``texts``: the submitted ones once done, any others counted now."""
        for thread, result in self._jobs:
            thread.join()
            self._counts.update(result)
        self._jobs = []
        missing = list(dict.fromkeys(t for t in texts if t not in self._counts))
        if missing:
            self._counts.update(zip(missing, _count_tokens(self.tokenizer, missing)))
        return self._counts


def _count_tokens(tokenizer: Any, texts: list[str]) -> list[int]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # The Rust tokenizer directly (in parallel): the Python wrapper's per-text conversion cost as much again.
        return [len(enc.ids) for enc in backend.encode_batch(texts, add_special_tokens=False)]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def token_lengths(tokenizer: Any, examples: Sequence[Example], system_prompt: str | None, max_seq_len: int,
                  counter: TokenCounter | None = None) -> LengthStats:
    """Measure every example's length in tokens, chat template and end-of-turn included.

    Args:
        tokenizer: The model's tokenizer (with its chat template).
        examples: The examples.
        system_prompt: The task's system message (an example's own wins).
        max_seq_len: The limit; examples above it are listed in ``over``.
        counter: A counter that may already hold these texts' counts.

    Returns:
        The lengths and the examples over the limit.
    """
    lengths = [0] * len(examples)
    flat = [i for i, ex in enumerate(examples) if not ex.turns]
    texts = [t for i in flat for t in _texts(examples[i])]
    # Labels and stock answers repeat: each distinct text is tokenised once.
    if counter is not None:
        counted = counter.counts(texts)
    else:
        distinct = list(dict.fromkeys(texts))
        counted = dict(zip(distinct, _count_tokens(tokenizer, distinct))) if distinct else {}
    ids = [counted[t] for t in texts]
    overhead: dict[str | None, int] = {}
    own: dict[str | None, list[int]] = {}  # text + answer tokens, per system message
    answers: dict[str | None, int] = {}
    pos = 0
    eos = 1 if tokenizer.eos_token else 0
    for i in flat:
        ex = examples[i]
        if ex.plain:
            lengths[i] = ids[pos] + eos
            pos += 1
            continue
        if ex.system not in overhead:
            overhead[ex.system] = _template_overhead(tokenizer, ex.system, system_prompt)
        lengths[i] = overhead[ex.system] + ids[pos] + ids[pos + 1]
        own.setdefault(ex.system, []).append(ids[pos] + ids[pos + 1])
        answers[ex.system] = max(answers.get(ex.system, 0), ids[pos + 1])
        pos += 2
    for system, fixed in overhead.items():
        check_fixed_part(fixed, answers[system], own[system], max_seq_len, system is not None)
    for i, ex in enumerate(examples):
        if ex.turns:
            lengths[i] = len(encode_example(tokenizer, ex, system_prompt, 1 << 30).input_ids)
    return LengthStats(lengths, max_seq_len, [i for i, n in enumerate(lengths) if n > max_seq_len])


def check_fixed_part(fixed: int, longest_answer: int, own: Sequence[int], max_seq_len: int,
                     per_example: bool = False) -> None:
    """Refuse, before any work, a limit that leaves no room for the examples' own text beside the instructions.

    Truncation only ever shortens the user's text, so the system message and chat template must fit
    with the longest answer and at least :data:`~tunesmith.data.encode.MIN_TEXT_TOKENS` of text.

    Args:
        fixed: Tokens of the template and system message (the label list, for classification).
        longest_answer: The longest answer's tokens.
        own: Each example's text and answer tokens (for the suggested limit).
        max_seq_len: ``model.max_seq_len``.
        per_example: The system message is an example's own, not the task's.

    Raises:
        DataError: It does not fit, with the smallest limit that would fit most examples whole.
    """
    if fixed + longest_answer + MIN_TEXT_TOKENS <= max_seq_len:
        return
    ordered = sorted(own)
    typical = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))] if ordered else 0
    suggest = -(-(fixed + max(typical, longest_answer + MIN_TEXT_TOKENS)) // 16) * 16
    whose = "an example's own system message" if per_example else "the system prompt (for classification, the label list)"
    raise DataError(f"{whose} and the chat template take {fixed} tokens, leaving {max(max_seq_len - fixed, 0)} of "
                    f"model.max_seq_len {max_seq_len} for the text and the answer (the longest answer takes "
                    f"{longest_answer}); truncation never cuts instructions, so raise model.max_seq_len to at least "
                    f"{suggest} (9 in 10 examples then fit whole)")


def too_long_message(examples: Sequence[Example], stats: LengthStats, split: str) -> str:
    """The error for ``length_policy: fail``, naming the first examples over the limit."""
    lines = [f"{len(stats.over)} {split} examples are longer than model.max_seq_len={stats.max_seq_len} tokens "
             "and data.length_policy is 'fail' (raise max_seq_len, or use truncate or drop); the first ones:"]
    lines += [f"  {examples[i].source}:{examples[i].line}: {stats.lengths[i]} tokens" for i in stats.over[:5]]
    return "\n".join(lines)


def apply_length_policy(examples: list[Example], stats: LengthStats, policy: str,
                        split: str) -> tuple[list[Example], list[Example]]:
    """Keep, drop or refuse the examples over the limit.

    Args:
        examples: The examples measured by ``stats``.
        stats: Their lengths.
        policy: ``truncate`` (keep; encoding shortens the user's text in its middle, never the system message),
            ``drop`` or ``fail``.
        split: Name used in the error.

    Returns:
        (kept examples, dropped examples).

    Raises:
        DataError: ``fail`` and some example is over the limit.
    """
    if not stats.over or policy == "truncate":
        return examples, []
    if policy == "fail":
        raise DataError(too_long_message(examples, stats, split))
    over = set(stats.over)
    return ([ex for i, ex in enumerate(examples) if i not in over],
            [dataclasses.replace(ex) for i, ex in enumerate(examples) if i in over])


@dataclass
class Measured:
    """The three splits after the length policy, and what was measured.

    Attributes:
        parts: (train, validation, test), without the examples the policy dropped.
        dropped: The dropped examples, by split name.
        summary: Per split, the length summary and the policy.
        values: Every measured example's token length, for the histogram.
    """

    parts: tuple[list[Example], list[Example], list[Example]]
    dropped: dict[str, list[Example]]
    summary: dict[str, Any]
    values: list[int]


def measure_splits(tokenizer: Any, train: list[Example], validation: list[Example], test: list[Example],
                   system_prompt: str | None, max_seq_len: int, policy: str,
                   counter: TokenCounter | None = None) -> Measured:
    """Measure each split in tokens and apply ``data.length_policy`` to it.

    Raises:
        DataError: ``policy`` is ``fail`` and an example is over ``max_seq_len``.
    """
    parts = {"train": train, "validation": validation, "test": test}
    dropped: dict[str, list[Example]] = {}
    summary: dict[str, Any] = {}
    values: list[int] = []
    for name, part in parts.items():
        stats = token_lengths(tokenizer, part, system_prompt, max_seq_len, counter)
        parts[name], dropped[name] = apply_length_policy(part, stats, policy, name)
        summary[name] = {**stats.summary(), "policy": policy}
        values += stats.lengths
    return Measured((parts["train"], parts["validation"], parts["test"]), dropped, summary, values)
