"""Data formats: one registry entry each, holding its fields and how a row becomes an Example.

Adding a format means one :func:`register_format` call here and one test row.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tunesmith.errors import DataError
from tunesmith.data.examples import Example


@dataclass(frozen=True)
class DataFormat:
    """How rows of one shape are read.

    Attributes:
        name: Registry key, used in ``data.format``.
        required: Fields every row must have (non-empty strings).
        optional: Fields used when present.
        build: Turns the mapped fields of a valid row into (prompt, target, label).
        tasks: Tasks this format is natural for; used only to order auto-detection.
        conversation: For chat formats, the (role key, content key, role map) of the turns held
            in the single required field; None for flat formats.
        plain: Plain text for continued pre-training (no chat template, loss on every token).
        to_row: Turns an Example back into a row of this format (format field names), for
            generated examples written next to the user's own data.
        context: The part of a row's prompt that other rows may share (see ``Example.context``), or None.
        passages: Its context is a passage questions are asked about: splits keep a passage's
            questions in one split (``data.split.keep_passages_together``).
        answer: The field that holds the answer (``label``, ``answer``, ``response``...), which rows to be
            answered (``tunesmith predict``) may leave out; None for chat formats (the final assistant
            turn is the answer) and plain text.
    """

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    build: Callable[[dict[str, str]], tuple[str, str, str | None]]
    tasks: tuple[str, ...]
    conversation: tuple[str, str, dict[str, str]] | None = None
    plain: bool = False
    to_row: Callable[[Example], dict[str, Any]] | None = None
    context: Callable[[dict[str, str]], str | None] | None = None
    passages: bool = False
    answer: str | None = None


FORMATS: dict[str, DataFormat] = {}


def register_format(fmt: DataFormat) -> DataFormat:
    """Add a format to the registry.

    Raises:
        ValueError: A format of that name is already registered.
    """
    if fmt.name in FORMATS:
        raise ValueError(f"data format {fmt.name!r} is already registered")
    FORMATS[fmt.name] = fmt
    return fmt


def _qa_prompt(f: dict[str, str]) -> str:
    ctx = f.get("context", "").strip()
    return f"Context: {ctx}\n\nQuestion: {f['question']}" if ctx else f["question"]


def _qa_row(ex: Example) -> dict[str, Any]:
    m = re.fullmatch(r"Context: (.*)\n\nQuestion: (.*)", ex.prompt, flags=re.S)
    return {"context": m.group(1), "question": m.group(2), "answer": ex.target} if m else {"question": ex.prompt, "answer": ex.target}


def _chat_row(field: str, role_key: str, content_key: str, roles: dict[str, str]) -> Callable[[Example], dict[str, Any]]:
    def to_row(ex: Example) -> dict[str, Any]:
        turns = ([{"role": "system", "content": ex.system}] if ex.system else []) + (
            ex.turns or [{"role": "user", "content": ex.prompt}, {"role": "assistant", "content": ex.target}])
        return {field: [{role_key: roles[t["role"]], content_key: t["content"]} for t in turns]}
    return to_row


register_format(DataFormat("text_label", ("text", "label"), (), lambda f: (f["text"], f["label"], f["label"]), ("classification",),
                           to_row=lambda ex: {"text": ex.prompt, "label": ex.label}, answer="label"))
register_format(DataFormat("prompt_response", ("prompt", "response"), ("system",), lambda f: (f["prompt"], f["response"], None), ("generation",),
                           to_row=lambda ex: {"prompt": ex.prompt, "response": ex.target, **({"system": ex.system} if ex.system else {})},
                           answer="response"))
register_format(DataFormat("qa", ("question", "answer"), ("context",), lambda f: (_qa_prompt(f), f["answer"], None), ("qa",),
                           to_row=_qa_row, context=lambda f: f.get("context") or None, passages=True, answer="answer"))
register_format(DataFormat("alpaca", ("instruction", "output"), ("input",),
                            lambda f: (f"{f['instruction']}\n\n{f['input']}" if f.get("input") else f["instruction"],
                                       f["output"], None), ("generation",),
                           to_row=lambda ex: {"instruction": ex.prompt, "output": ex.target},
                           context=lambda f: f["instruction"] if f.get("input") else None, answer="output"))
_last_turns = lambda f: (f["prompt"], f["target"], None)  # noqa: E731 - conversations are built in _conversation
register_format(DataFormat("messages", ("messages",), (), _last_turns, ("generation",),
                           ("role", "content", {"system": "system", "user": "user", "assistant": "assistant"}),
                           to_row=_chat_row("messages", "role", "content", {"system": "system", "user": "user", "assistant": "assistant"})))
register_format(DataFormat("sharegpt", ("conversations",), (), _last_turns, ("generation",),
                           ("from", "value", {"system": "system", "human": "user", "user": "user",
                                              "gpt": "assistant", "assistant": "assistant"}),
                           to_row=_chat_row("conversations", "from", "value", {"system": "system", "user": "human", "assistant": "gpt"})))


def _halves(f: dict[str, str]) -> tuple[str, str, None]:
    words = f["text"].split(" ")
    cut = max(1, len(words) // 2) if len(words) > 1 else 0
    return " ".join(words[:cut]), " ".join(words[cut:]) if cut else f["text"], None


register_format(DataFormat("text", ("text",), (), _halves, ("generation",), plain=True,
                           to_row=lambda ex: {"text": f"{ex.prompt} {ex.target}".strip()}))
register_format(DataFormat("document_summary", ("document", "summary"), (), lambda f: (f["document"], f["summary"], None), ("summarization",),
                           to_row=lambda ex: {"document": ex.prompt, "summary": ex.target}, answer="summary"))


def example_to_row(fmt_name: str, ex: Example, columns: dict[str, str]) -> dict[str, Any]:
    """An Example as a row of the named format, with the user's column names.

    Raises:
        KeyError: The format is not registered.
        ValueError: The format cannot write rows.
    """
    fmt = FORMATS[fmt_name]
    if fmt.to_row is None:
        raise ValueError(f"data format {fmt_name!r} cannot write rows")
    return {columns.get(k, k): v for k, v in fmt.to_row(ex).items()}


def detect_format(keys: set[str], columns: dict[str, str]) -> str:
    """Pick the registered format whose required fields the row has.

    Args:
        keys: The field names of the first row.
        columns: The user's mapping from format field to column name.

    Returns:
        The format's name.

    Raises:
        DataError: No format or more than one fits.
    """
    fitting = [f for f in FORMATS.values() if all(columns.get(r, r) in keys for r in f.required)]
    # A row with text and label is labelled data, not plain text: the format needing more fields wins.
    fits = [f.name for f in fitting if not any(set(f.required) < set(g.required) for g in fitting)]
    if len(fits) == 1:
        return fits[0]
    if not fits:
        shapes = "; ".join(f"{f.name}: {', '.join(f.required)}" for f in FORMATS.values())
        raise DataError(f"cannot tell the data format from the fields {sorted(keys)}; expected one of {shapes} "
                        "(set data.format, or map your column names with data.columns)")
    raise DataError(f"fields {sorted(keys)} fit several formats ({', '.join(fits)}); set data.format")


def row_to_example(fmt: DataFormat, row: dict[str, Any], columns: dict[str, str], *, path: object, line: int,
                   answer_required: bool = True) -> Example:
    """Validate one raw row and build its Example.

    Args:
        fmt: The row format.
        row: The parsed row.
        columns: Format field -> column name mapping.
        path: Source file, for messages and the id.
        line: 1-based line (or CSV record) number.
        answer_required: False for rows to be answered: the answer field may be missing (the target is
            then empty) and a conversation may end with the user's turn.

    Raises:
        DataError: A required field is missing, empty or not a string (naming file, line and field).
    """
    if fmt.conversation is not None:
        return _conversation_example(fmt, row, columns, path=path, line=line, answer_required=answer_required)
    required = fmt.required if answer_required else tuple(f for f in fmt.required if f != fmt.answer)
    fields: dict[str, str] = {}
    for name in fmt.required + fmt.optional:
        col = columns.get(name, name)
        if col not in row or row[col] is None:
            if name in required:
                raise DataError("missing required field", path=path, line=line, field=col)
            continue
        value = row[col]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and name == "label":
            value = str(value)
        if not isinstance(value, str):
            raise DataError(f"expected a string, got {type(value).__name__}", path=path, line=line, field=col)
        if name in required and not value.strip():
            raise DataError("empty value", path=path, line=line, field=col)
        fields[name] = value.strip()
    if not answer_required and fmt.answer is not None:
        fields.setdefault(fmt.answer, "")
    prompt, target, label = fmt.build(fields)
    used = {columns.get(n, n) for n in fmt.required + fmt.optional}
    meta = {k: v for k, v in row.items() if k not in used and k != "id"}
    ex_id = str(row["id"]) if row.get("id") is not None else f"{getattr(path, 'name', path)}:{line}"
    return Example(id=ex_id, prompt=prompt, target=target, label=label, system=fields.get("system"), meta=meta,
                   source=getattr(path, "name", str(path)), line=line, plain=fmt.plain,
                   context=fmt.context(fields) if fmt.context else None)


def _conversation_example(fmt: DataFormat, row: dict[str, Any], columns: dict[str, str], *, path: object,
                          line: int, answer_required: bool = True) -> Example:
    """Validate a chat row (OpenAI ``messages`` or ShareGPT ``conversations``) and build its Example.

    The Example's prompt and target are the last user and assistant turns; ``turns`` keeps the
    whole conversation so that training puts loss on every assistant turn.

    Raises:
        DataError: The turns are not a list, a turn has an unknown role or empty content, or the
            conversation does not end with an assistant answer to a user turn.
    """
    assert fmt.conversation is not None
    role_key, content_key, roles = fmt.conversation
    col = columns.get(fmt.required[0], fmt.required[0])
    value = row.get(col)
    if value is None:
        raise DataError("missing required field", path=path, line=line, field=col)
    if not isinstance(value, list) or not value:
        raise DataError("expected a non-empty list of turns", path=path, line=line, field=col)
    turns: list[dict[str, str]] = []
    for i, turn in enumerate(value, start=1):
        if not isinstance(turn, dict):
            raise DataError(f"turn {i}: expected an object, got {type(turn).__name__}", path=path, line=line, field=col)
        role = roles.get(str(turn.get(role_key, "")).lower())
        if role is None:
            raise DataError(f"turn {i}: unknown {role_key} {turn.get(role_key)!r} (expected one of {', '.join(roles)})",
                            path=path, line=line, field=col)
        content = turn.get(content_key)
        if not isinstance(content, str) or not content.strip():
            raise DataError(f"turn {i}: '{content_key}' must be a non-empty string", path=path, line=line, field=col)
        turns.append({"role": role, "content": content.strip()})
    system = turns[0]["content"] if turns[0]["role"] == "system" else None
    dialogue = turns[1:] if system is not None else turns
    if not answer_required and dialogue and dialogue[-1]["role"] == "user":
        dialogue = [*dialogue, {"role": "assistant", "content": ""}]  # to be answered
    if len(dialogue) < 2 or dialogue[-1]["role"] != "assistant" or dialogue[-2]["role"] != "user":
        raise DataError("the conversation must end with a user turn answered by an assistant turn",
                        path=path, line=line, field=col)
    meta = {k: v for k, v in row.items() if k not in (col, "id")}
    ex_id = str(row["id"]) if row.get("id") is not None else f"{getattr(path, 'name', path)}:{line}"
    return Example(id=ex_id, prompt=dialogue[-2]["content"], target=dialogue[-1]["content"], system=system,
                   meta=meta, source=getattr(path, "name", str(path)), line=line,
                   turns=dialogue if len(dialogue) > 2 else None)
