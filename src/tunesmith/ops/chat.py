"""Answering a prompt with a run's tuned model, rendered as training saw it."""

from __future__ import annotations

from dataclasses import dataclass

from tunesmith.config import Config
from tunesmith.data.encode import encode_prompt, head_prompt
from tunesmith.data.examples import Example
from tunesmith.data.prepare import Splits
from tunesmith.evaluate.evaluator import constrains
from tunesmith.evaluate.normalize import match_label
from tunesmith.inference.classify import classify_batched, most_probable
from tunesmith.inference.constrained import answers_within_labels, label_trie
from tunesmith.inference.generate import generate_batched
from tunesmith.models.load import is_classifier
from tunesmith.runs.folder import RunPaths
from tunesmith.steps.model import load_tuned


@dataclass(frozen=True)
class ChatReply:
    """One answer.

    Attributes:
        answer: What the model says (a head's answer is its label).
        label: For classification, the label the run answers with, as evaluation decides it (within the
            label set, or the head's most probable label); None for other tasks.
        probability: That label's probability, where the run gives one.
        free_label: For a generative classification run, the label the free answer names, if any.
    """

    answer: str
    label: str | None = None
    probability: float | None = None
    free_label: str | None = None


def chat_reply(run: RunPaths, cfg: Config, splits: Splits, prompt: str, max_new_tokens: int | None = None) -> ChatReply:
    """Answer one prompt with the run's tuned model, rendered as training saw it.

    Raises:
        UserError: The run has no saved adapter.
    """
    lm = load_tuned(cfg, run, splits.labels)
    example = Example(id="chat", prompt=prompt, target="")
    labels = splits.labels or []
    if is_classifier(lm.model):  # a head answers with the most probable label
        ids = head_prompt(lm.tokenizer, example, splits.system_prompt, cfg.model.max_seq_len)[0]
        label, probability = most_probable(labels, classify_batched(lm, [ids], 1, label="chat")[0])
        return ChatReply(label, label, probability)
    ids = encode_prompt(lm.tokenizer, example, splits.system_prompt, cfg.model.max_seq_len)
    tokens = max_new_tokens or cfg.eval.max_new_tokens
    if labels and constrains(cfg.objective.task, labels, splits.tasks, cfg.eval):
        texts, answers = answers_within_labels(lm, [ids], label_trie(lm.tokenizer, labels, splits.system_prompt), tokens, 1,
                                               label="chat")
        return ChatReply(texts[0], answers[0].label, answers[0].probability, match_label(texts[0], labels))
    text = generate_batched(lm, [ids], tokens, 1, label="chat")[0]
    if not labels:
        return ChatReply(text)
    free = match_label(text, labels)
    return ChatReply(text, free, None, free)


def chat_once(run: RunPaths, cfg: Config, splits: Splits, prompt: str, max_new_tokens: int | None = None) -> str:
    """The answer alone (:func:`chat_reply`)."""
    return chat_reply(run, cfg, splits, prompt, max_new_tokens).answer
