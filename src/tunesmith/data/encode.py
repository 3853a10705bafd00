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
        weight: Multiplies this example's token losses (class balance by loss weights).
    """

    input_ids: list[int]
    labels: list[int]
    truncated: bool
    weight: float = 1.0

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
    """The prompt as text, ending where the assistant's answer begins (plain text: its first half, as is)."""
    if example.plain:
        return example.prompt
    return tokenizer.apply_chat_template(messages_for(example, system_prompt), tokenize=False, add_generation_prompt=True)


def render_completion_text(tokenizer: Any, example: Example, system_prompt: str | None) -> str:
    """The text the chat template puts after the prompt for the reference answer (end-of-turn included)."""
    if example.plain:
        return (" " if example.prompt else "") + example.target + (tokenizer.eos_token or "")
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
    if example.plain:
        # Continued pre-training: the whole text is learnt; longer texts keep their first max_len tokens.
        text = render_prompt_text(tokenizer, example, None) + render_completion_text(tokenizer, example, None)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return Encoded(ids[:max_len], ids[:max_len], len(ids) > max_len)
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


def render_preview(tokenizer: Any, example: Example, system_prompt: str | None, max_len: int) -> dict[str, str]:
    """One example decoded from the very token ids training uses, and the part of it that carries loss.

    Returns:
        ``{"id", "text", "loss_on"}``: the full sequence as text (special tokens shown) and the
        labelled tokens as text (several answers of a conversation are separated by `` … ``).
    """
    enc = encode_example(tokenizer, example, system_prompt, max_len)
    pieces, run = [], []
    for tok, lab in zip(enc.input_ids, enc.labels):
        if lab != IGNORE_INDEX:
            run.append(tok)
        elif run:
            pieces.append(tokenizer.decode(run))
            run = []
    if run:
        pieces.append(tokenizer.decode(run))
    return {"id": example.id, "text": tokenizer.decode(enc.input_ids), "loss_on": " … ".join(pieces)}
