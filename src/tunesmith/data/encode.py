"""Rendering examples through the model's own chat template, with completion-only labels."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from tunesmith.data.examples import Example
from tunesmith.errors import DataError

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


#: What stands where the middle of a shortened text was cut out.
CUT_MARK = " … "
#: A text is never shortened below this many of its own tokens to make room for a long answer.
MIN_TEXT_TOKENS = 16


def _ids(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def fit_prompt(tokenizer: Any, example: Example, system_prompt: str | None, budget: int) -> tuple[list[int], bool]:
    """The prompt's token ids within ``budget``, shortening only the user's text: its middle is cut out.

    The system message (for classification, the label list), the chat template and the ends of the
    text (the opening of a document, the question after a QA passage) are kept. A plain-text
    example keeps its first ``budget`` tokens.

    Returns:
        (token ids, whether the text was shortened).

    Raises:
        DataError: The prompt without any of the user's text (system message and template) is over ``budget``.
    """
    ids = _ids(tokenizer, render_prompt_text(tokenizer, example, system_prompt))
    if len(ids) <= budget:
        return ids, False
    if example.plain:
        return ids[:budget], True
    if example.turns:  # a conversation gives up its earlier turns before the last message is shortened
        return fit_prompt(tokenizer, dataclasses.replace(example, turns=None), system_prompt, budget)[0], True
    text = _ids(tokenizer, example.prompt)
    over = len(ids) - budget
    for _ in range(4):  # re-rendering can move a token or two at the cut: tighten until it fits
        keep = len(text) - over - len(_ids(tokenizer, CUT_MARK))
        if keep <= 0:
            fixed = len(ids) - len(text)
            raise DataError(f"the prompt without the text (system message and chat template) takes {fixed} tokens, "
                            f"over the {budget} available: raise model.max_seq_len", path=example.source or None,
                            line=example.line or None if example.source else None)
        head = (keep + 1) // 2
        short = tokenizer.decode(text[:head]) + CUT_MARK + tokenizer.decode(text[len(text) - (keep - head):])
        ids = _ids(tokenizer, render_prompt_text(tokenizer, dataclasses.replace(example, prompt=short), system_prompt))
        if len(ids) <= budget:
            return ids, True
        over += len(ids) - budget
    return ids[-budget:], True


def encode_prompt(tokenizer: Any, example: Example, system_prompt: str | None, max_len: int) -> list[int]:
    """Token ids of the prompt for generation within ``max_len``: the user's text is shortened, never the
    system message (:func:`fit_prompt`)."""
    return fit_prompt(tokenizer, example, system_prompt, max_len)[0]


def encode_example(tokenizer: Any, example: Example, system_prompt: str | None, max_len: int) -> Encoded:
    """Tokenise prompt and completion so that only the completion carries labels.

    Prompt and completion are tokenised separately and concatenated, so the prompt
    tokens are exactly the ones generation sees at evaluation time. An example over ``max_len``
    keeps its system message and template: the user's text is shortened in its middle (to a
    floor of :data:`MIN_TEXT_TOKENS`), then the answer is cut from its end; a conversation drops
    its oldest exchanges first.

    Args:
        tokenizer: A Hugging Face tokenizer with a chat template.
        example: The example.
        system_prompt: The task's system message (the example's own wins).
        max_len: Longest sequence.

    Returns:
        The encoded example.

    Raises:
        DataError: The system message and template alone do not fit in ``max_len``.
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
    prompt_ids = _ids(tokenizer, render_prompt_text(tokenizer, example, system_prompt))
    comp_ids = _ids(tokenizer, render_completion_text(tokenizer, example, system_prompt))
    truncated = False
    if len(prompt_ids) + len(comp_ids) > max_len:
        if example.turns:  # too long even as one rendering: the last exchange alone
            return dataclasses.replace(encode_example(tokenizer, dataclasses.replace(example, turns=None),
                                                      system_prompt, max_len), truncated=True)
        truncated = True
        # The user's text gives way first (down to a floor); then the answer is cut from its end.
        text_len = len(_ids(tokenizer, example.prompt))
        floor = len(prompt_ids) - text_len + min(text_len, MIN_TEXT_TOKENS)
        prompt_ids, _ = fit_prompt(tokenizer, example, system_prompt, max(max_len - len(comp_ids), min(floor, max_len - 1)))
        comp_ids = comp_ids[: max(1, max_len - len(prompt_ids))]
    return Encoded(prompt_ids + comp_ids, [IGNORE_INDEX] * len(prompt_ids) + list(comp_ids), truncated)


def _encode_turns(tokenizer: Any, conversation: list[dict[str, str]], max_len: int) -> Encoded | None:
    """Encode a multi-turn conversation with labels on every assistant turn.

    The conversation is rendered turn by turn; each assistant answer is the text its
    rendering adds after the generation prompt. Returns None when the template does not
    render conversations as growing prefixes, or when even the last exchange alone is over
    ``max_len`` (the caller then encodes the last exchange, shortening its text). A longer
    conversation drops its oldest exchanges, never its system message.
    """
    system = conversation[:1] if conversation and conversation[0]["role"] == "system" else []
    rest = conversation[len(system):]
    dropped = False
    while True:
        enc = _encode_turns_once(tokenizer, system + rest, max_len)
        if enc is None:
            return None
        if len(enc.input_ids) <= max_len:
            return Encoded(enc.input_ids, enc.labels, dropped)
        answers = [i for i, m in enumerate(rest) if m["role"] == "assistant"]
        if len(answers) < 2:
            return None
        rest, dropped = rest[answers[0] + 1:], True


def _encode_turns_once(tokenizer: Any, conversation: list[dict[str, str]], max_len: int) -> Encoded | None:
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
        context = _ids(tokenizer, prompt[len(done):])
        answer = _ids(tokenizer, full[len(prompt):])
        ids += context + answer
        labels += [IGNORE_INDEX] * len(context) + answer
        done = full
    return Encoded(ids, labels, len(ids) > max_len)


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


def head_prompt(tokenizer: Any, example: Example, system_prompt: str | None, max_len: int) -> tuple[list[int], bool]:
    """The prompt a classification head reads, as training, evaluation, ``predict`` and ``chat`` all build it:
    fitted in ``max_len - 1`` tokens (training adds one padding token after it, see :func:`encode_for_head`).

    Returns:
        (token ids, whether the text was shortened).
    """
    return fit_prompt(tokenizer, example, system_prompt, max_len - 1)


def encode_for_head(tokenizer: Any, example: Example, system_prompt: str | None, max_len: int,
                    label_index: int) -> Encoded:
    """An example for a classification head: the prompt, one padding token, and the label's index as its label.

    The loss reads the hidden state where the next token is predicted, so the label sits on the
    position after the prompt's last token: the head sees the last prompt token, as
    ``AutoModelForSequenceClassification`` reads the last token that is not padding at inference.
    Everything else (batching, packing, shared prefixes) stays as for generated answers.
    """
    prompt_ids, truncated = head_prompt(tokenizer, example, system_prompt, max_len)
    return Encoded(prompt_ids + [tokenizer.pad_token_id], [IGNORE_INDEX] * len(prompt_ids) + [label_index], truncated)
