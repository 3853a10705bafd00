"""Rendering examples through the model's own chat template, with completion-only labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunesmith.data.examples import Example

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Encoded:
    """Token ids of one example.

    Attributes:
        input_ids: Prompt followed by completion.
        labels: ``IGNORE_INDEX`` on prompt tokens, the token id on completion tokens.
        truncated: Whether the prompt or completion was cut to fit ``max_len``.
    """

    input_ids: list[int]
    labels: list[int]
    truncated: bool

    @property
    def n_completion(self) -> int:
        """Tokens that carry a label."""
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


def _conversation(example: Example, system_prompt: str | None) -> list[dict[str, str]]:
    """Every message of the example, the final answer included."""
    system = example.system if example.system is not None else system_prompt
    msgs = [{"role": "system", "content": system}] if system else []
    if example.turns:
        return msgs + [dict(t) for t in example.turns]
    return msgs + [{"role": "user", "content": example.prompt}, {"role": "assistant", "content": example.target}]


def messages_for(example: Example, system_prompt: str | None) -> list[dict[str, str]]:
    """The chat messages up to (not including) the final answer."""
    return _conversation(example, system_prompt)[:-1]


def render_prompt_text(tokenizer: Any, example: Example, system_prompt: str | None) -> str:
    """The prompt as text, ending where the assistant's answer begins."""
    return tokenizer.apply_chat_template(messages_for(example, system_prompt), tokenize=False, add_generation_prompt=True)


def render_completion_text(tokenizer: Any, example: Example, system_prompt: str | None) -> str:
    """The text the chat template puts after the prompt for the reference answer (end-of-turn included)."""
    msgs = messages_for(example, system_prompt)
    prompt = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(msgs + [{"role": "assistant", "content": example.target}], tokenize=False)
    if not full.startswith(prompt):
        # Templates that rewrite earlier turns (rare) get the answer plus the end-of-sequence token.
        return example.target + (tokenizer.eos_token or "")
    return full[len(prompt):]


def encode_prompt(tokenizer: Any, example: Example, system_prompt: str | None, max_len: int) -> list[int]:
    """Token ids of the prompt for generation, cut from the left to ``max_len``."""
    ids = tokenizer(render_prompt_text(tokenizer, example, system_prompt), add_special_tokens=False)["input_ids"]
    return ids[-max_len:]


def encode_example(tokenizer: Any, example: Example, system_prompt: str | None, max_len: int) -> Encoded:
    """Tokenise prompt and completion so that only the completion carries labels.

    Prompt and completion are tokenised separately and concatenated, so the prompt
    tokens are exactly the ones generation sees at evaluation time.

    Args:
        tokenizer: A Hugging Face tokenizer with a chat template.
        example: The example.
        system_prompt: The task's system message (the example's own wins).
        max_len: Longest sequence; the prompt is cut from the left first, then the completion from the right.

    Returns:
        The encoded example.
    """
    if example.turns:
        multi = _encode_turns(tokenizer, _conversation(example, system_prompt), max_len)
        if multi is not None:
            return multi
    prompt_ids = tokenizer(render_prompt_text(tokenizer, example, system_prompt), add_special_tokens=False)["input_ids"]
    comp_ids = tokenizer(render_completion_text(tokenizer, example, system_prompt), add_special_tokens=False)["input_ids"]
    truncated = False
    if len(prompt_ids) + len(comp_ids) > max_len:
        truncated = True
        comp_ids = comp_ids[: max(1, max_len - min(len(prompt_ids), max_len // 2))]
        prompt_ids = prompt_ids[-(max_len - len(comp_ids)):]
    return Encoded(prompt_ids + comp_ids, [IGNORE_INDEX] * len(prompt_ids) + list(comp_ids), truncated)


def _encode_turns(tokenizer: Any, conversation: list[dict[str, str]], max_len: int) -> Encoded | None:
    """Encode a multi-turn conversation with labels on every assistant turn.

    The conversation is rendered turn by turn; each assistant answer is the text its
    rendering adds after the generation prompt. Returns None when the template does not
    render conversations as growing prefixes (the caller then labels the last answer only).
    Longer conversations keep their last ``max_len`` tokens.
    """
    ids: list[int] = []
    labels: list[int] = []
    done = ""
    for i, msg in enumerate(conversation):
        if msg["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(conversation[:i], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(conversation[: i + 1], tokenize=False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            return None
        context = tokenizer(prompt[len(done):], add_special_tokens=False)["input_ids"]
        answer = tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
        ids += context + answer
        labels += [IGNORE_INDEX] * len(context) + answer
        done = full
    truncated = len(ids) > max_len
    return Encoded(ids[-max_len:], labels[-max_len:], truncated)
