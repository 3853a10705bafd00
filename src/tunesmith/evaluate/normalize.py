"""Answer normalisation before scoring."""

from __future__ import annotations

import re
import string

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_LABEL_SEP = re.compile(r"[\s_\-]+")


def squad_normalize(text: str) -> str:
    """The official SQuAD v1.1 normalisation: lower-case, drop punctuation, articles and extra spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def label_key(text: str) -> str:
    """A comparison key for labels: case, surrounding punctuation, and space/underscore/hyphen differences ignored."""
    text = text.strip().strip(string.punctuation + " \"'`").lower()
    return _LABEL_SEP.sub("_", text)


def match_label(generated: str, labels: list[str]) -> str | None:
    """Map a generated answer to a label, or None when it names none.

    The first line of the output is compared with each label after :func:`label_key`;
    an answer such as ``Label: card_arrival`` is accepted when exactly one label occurs in it.
    """
    first = generated.strip().splitlines()[0] if generated.strip() else ""
    keys = {label_key(lab): lab for lab in labels}
    key = label_key(first)
    if key in keys:
        return keys[key]
    found = [lab for k, lab in keys.items() if re.search(rf"(?<![a-z0-9]){re.escape(k)}(?![a-z0-9])", key)]
    return found[0] if len(found) == 1 else None
