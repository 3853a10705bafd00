"""Answers inside the label set: decoding constrained to a token trie of the labels, with the probability of each.

Each label is tokenised as training saw it (the chat template's completion text, up to and
including the end-of-turn token), and the labels' token sequences form a trie. Decoding is greedy
over the children of the current trie node only, so every answer is a label and generation stops
as soon as one is complete. The probability of a label is the product, along its path, of the
model's next-token probabilities renormalised over the node's children; over all labels these
sum to 1, and the chosen label's probability is its confidence (what calibration measures and
what monitoring can use to estimate accuracy without labels).

Evaluation wants the free answer as well (how often it differs is in the report). Where every token
the constrained decoding chose was also the most probable over the whole vocabulary, free greedy
decoding would choose the same tokens and stop at the same end of turn, so :func:`answers_within_labels`
reads the free answer off the constrained pass and decodes freely only the other rows: a tuned
model whose answers are labels is answered by one pass, not two.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from rich.progress import Progress, TaskID

from tunesmith.data.encode import render_completion_text
from tunesmith.data.examples import Example
from tunesmith.inference.generate import PrefixCache, batch_inputs, generate_batched, progress_task
from tunesmith.models.load import LoadedModel
from tunesmith.train.batching import sequential_batches


@dataclass
class LabelTrie:
    """The labels' token sequences as a trie.

    Attributes:
        sequences: Label -> its token ids (the end-of-turn token last).
        children: A prefix of some label's ids -> the token ids that may follow it.
        labels: A complete sequence -> its label.
        end: The end-of-turn token id.
    """

    sequences: dict[str, tuple[int, ...]]
    end: int
    children: dict[tuple[int, ...], list[int]] = field(default_factory=dict)
    labels: dict[tuple[int, ...], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        kids: dict[tuple[int, ...], set[int]] = {}
        for label, seq in self.sequences.items():
            self.labels[seq] = label
            for i in range(len(seq)):
                kids.setdefault(seq[:i], set()).add(seq[i])
        self.children = {k: sorted(v) for k, v in kids.items()}

    @property
    def depth(self) -> int:
        """The longest label's tokens."""
        return max(len(s) for s in self.sequences.values())


def label_trie(tokenizer: object, labels: Sequence[str], system_prompt: str | None) -> LabelTrie:
    """The trie of ``labels`` tokenised as the run's completions.

    Raises:
        ValueError: No labels, two labels tokenise alike, or the tokenizer has no end-of-turn token.
    """
    end = getattr(tokenizer, "eos_token_id", None)
    if end is None:
        raise ValueError("the tokenizer has no end-of-sequence token to end a label with")
    if not labels:
        raise ValueError("no labels to constrain the answers to")
    sequences: dict[str, tuple[int, ...]] = {}
    for label in labels:
        text = render_completion_text(tokenizer, Example(id="label", prompt="x", target=label), system_prompt)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        seq = tuple(ids[: ids.index(end) + 1]) if end in ids else (*ids, end)
        sequences[label] = seq
    if len(set(sequences.values())) < len(sequences):
        raise ValueError("two labels have the same tokens")
    return LabelTrie(sequences, end)


@dataclass(frozen=True)
class ConstrainedAnswer:
    """A label chosen by constrained decoding and its probability (renormalised over the trie).

    Attributes:
        label: The label.
        probability: Its probability, renormalised over the labels.
        greedy: Every token chosen was also the most probable token of the whole vocabulary: free
            greedy decoding gives the same answer.
    """

    label: str
    probability: float
    greedy: bool = False


@torch.no_grad()
def constrained_answers(lm: LoadedModel, prompts: Sequence[list[int]], trie: LabelTrie, batch_size: int,
                        label: str = "labels", progress: tuple[Progress, TaskID] | None = None,
                        prefix_cache: bool = True) -> list[ConstrainedAnswer]:
    """Greedy decoding of each prompt within the label trie: a label per prompt, with its probability.

    Args:
        lm: The model and tokenizer.
        prompts: Token ids of each prompt.
        trie: The labels' trie (:func:`label_trie`).
        batch_size: Prompts decoded together (left-padded).
        label: Progress-bar description.
        progress: A caller's progress bar and task to advance; None shows its own.
        prefix_cache: Compute the prompts' shared opening once (the answers are the same).

    Returns:
        One answer per prompt, in order.
    """
    tok, model = lm.tokenizer, lm.model
    pad = tok.pad_token_id
    out: list[ConstrainedAnswer | None] = [None] * len(prompts)
    model.eval()
    cached = PrefixCache.for_prompts(lm, prompts) if prefix_cache else None
    with progress_task(progress, label, len(prompts)) as (bar, task), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # past_key_values, as transformers 4 and 5 both take it
        for idx in sequential_batches([len(p) for p in prompts], batch_size):
            ids, mask, extra = batch_inputs(prompts, idx, pad, cached)
            width = ids.shape[1]

            def allowed(_: int, sequence: torch.Tensor) -> list[int]:
                return trie.children.get(tuple(sequence[width:].tolist()), [trie.end])

            with lm.autocast():
                result = model.generate(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                                        max_new_tokens=trie.depth, prefix_allowed_tokens_fn=allowed, do_sample=False,
                                        temperature=None, top_p=None, top_k=None, pad_token_id=pad,
                                        eos_token_id=trie.end, output_scores=True, output_logits=True,
                                        return_dict_in_generate=True, **extra)
            generated = result.sequences[:, width:]
            logp = torch.stack([torch.log_softmax(s.float(), dim=-1) for s in result.scores], dim=1)  # rows, steps, vocab
            best = torch.stack([raw.argmax(dim=-1) for raw in result.logits], dim=1)  # rows, steps: free greedy's choice
            for row, i in enumerate(idx):
                seq = generated[row].tolist()
                seq = tuple(seq[: seq.index(trie.end) + 1]) if trie.end in seq else tuple(seq)
                total = float(sum(logp[row, t, token] for t, token in enumerate(seq)))
                greedy = all(int(best[row, t]) == token for t, token in enumerate(seq))
                out[i] = ConstrainedAnswer(trie.labels.get(seq, ""), float(torch.tensor(total).exp()), greedy)
            bar.update(task, advance=len(idx))
    return [a for a in out if a is not None]


def answers_within_labels(lm: LoadedModel, prompts: Sequence[list[int]], trie: LabelTrie, max_new_tokens: int,
                          batch_size: int, label: str = "labels", progress: tuple[Progress, TaskID] | None = None,
                          ) -> tuple[list[str], list[ConstrainedAnswer]]:
    """Each prompt's free greedy answer and its answer within the labels, the free one decoded only where needed.

    The constrained pass runs first; a row whose chosen tokens were all also free greedy's choice
    (:attr:`ConstrainedAnswer.greedy`) and fit ``max_new_tokens`` has that label's text as its free
    answer (what :func:`generate_batched` would give); the other rows are decoded freely.

    Args:
        lm: The model and tokenizer.
        prompts: Token ids of each prompt.
        trie: The labels' trie (:func:`label_trie`).
        max_new_tokens: The free answer's longest length.
        batch_size: Prompts decoded together.
        label: Progress description.
        progress: A caller's progress bar and task, advanced once per prompt by the constrained pass;
            the free pass of the remaining rows adds a task of its own to the same bar.

    Returns:
        The free answers (special tokens removed) and the constrained answers, in the order of ``prompts``.
    """
    answers = constrained_answers(lm, prompts, trie, batch_size, label=label, progress=progress)
    free = [""] * len(prompts)
    rest = []
    for i, answer in enumerate(answers):
        seq = trie.sequences.get(answer.label)
        if answer.greedy and seq is not None and len(seq) <= max_new_tokens:
            free[i] = lm.tokenizer.decode(list(seq), skip_special_tokens=True).strip()
        else:
            rest.append(i)
    if rest:
        sub = None if progress is None else (progress[0], progress[0].add_task(
            f"{label}: free answers of {len(rest)} rows off greedy", total=len(rest), info=""))
        for i, text in zip(rest, generate_batched(lm, [prompts[i] for i in rest], max_new_tokens, batch_size,
                                                  label=f"{label} (free answers)", progress=sub)):
            free[i] = text
    return free, answers


@torch.no_grad()
def label_distribution(lm: LoadedModel, prompt: list[int], trie: LabelTrie) -> dict[str, float]:
    """The probability of every label for one prompt (trie-renormalised; they sum to 1).

    Every label is scored by one teacher-forced pass of prompt + label, all labels in one batch:
    meant for moderate label sets (each row holds the whole prompt).
    """
    labels = list(trie.sequences)
    rows = [prompt + list(trie.sequences[lab]) for lab in labels]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), lm.tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row)
        mask[r, : len(row)] = 1
    with lm.autocast():
        logits = lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device)).logits.float()
    out = {}
    for r, lab in enumerate(labels):
        seq = trie.sequences[lab]
        total = 0.0
        for t, token in enumerate(seq):
            allowed = trie.children[seq[:t]]
            scores = logits[r, len(prompt) + t - 1, allowed]
            total += float(torch.log_softmax(scores, dim=-1)[allowed.index(token)])
        out[lab] = float(torch.tensor(total).exp())
    return out
