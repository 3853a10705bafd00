"""Personal data and secrets: pattern detectors with checksums, and redaction with typed placeholders.

Each detector pairs a regular expression with a validator (Luhn for payment cards, ISO 7064
mod 97 for IBANs, octet ranges for IP addresses, SSA rules for US social security numbers),
so that order numbers, dates and prices are not taken for personal data. Names and places
need a named-entity model: :func:`presidio_detector` adds them where Presidio is installed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

from tunesmith.errors import DataError

#: Types found by the pattern detectors.
PII_TYPES: tuple[str, ...] = ("PRIVATE_KEY", "SECRET", "EMAIL", "IBAN", "CARD", "SSN", "IP", "PHONE")
#: Types found only by a named-entity backend.
NER_TYPES: tuple[str, ...] = ("PERSON", "LOCATION")


@dataclass(frozen=True)
class Span:
    """One detected item: its type and where it is in the text."""

    type: str
    start: int
    end: int
    value: str


def _luhn(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban(value: str) -> bool:
    s = value.replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    rearranged = s[4:] + s[:4]
    digits = "".join(str(int(c, 36)) for c in rearranged)
    return int(digits) % 97 == 1


def _ssn(value: str) -> bool:
    area, group, serial = value.split("-")
    return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"


def _ip(value: str) -> bool:
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return False
    return not (ip.version == 6 and value.count(":") < 3)


def _phone(value: str) -> bool:
    digits = re.sub(r"\D", "", value)
    if not 7 <= len(digits) <= 15:
        return False
    if re.fullmatch(r"[+\-]?\d+\.\d+", value):
        return False  # a signed decimal number (+3.140000), not a dotted phone number
    if value.startswith("+"):
        return value[1:2] != "0"  # country codes never start with 0 (+000000120 is zero padding)
    if value.startswith("("):
        return True
    # Without a country code or area code in brackets, ids, dates and references look alike:
    # accept only separated groups ending in four digits (555-0142, 020 7946 0018).
    groups = re.split(r"[\s.\-]", value.strip())
    if len(groups) == 2 and all(len(g) == 4 and 1000 <= int(g) <= 2100 for g in groups) and groups[0] <= groups[1]:
        return False  # a range of years (1851-1860), as encyclopedic text is full of
    return len(groups) >= 2 and len(groups[-1]) == 4


#: Words after which a dotted quad is a numbering (section 4.2.1.5, version 1.2.3.4), not an address.
_NUMBERED = re.compile(r"(?i)\b(?:section|sections|chapter|clause|article|paragraph|rule|step|figure|table|item|"
                       r"version|release|v|rev|revision|§)\s*$")

_SECRET_PREFIXES = ("sk-", "AKIA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "xox", "AIza", "glpat-")


def _digits(text: str) -> int:
    return sum(map(text.count, "0123456789"))


# Each detector: type, pattern, validator, and a cheap precondition on (text, digit count) that
# every match needs. Most texts hold no personal data; the preconditions spare them the regexes.
_DETECTORS: list[tuple[str, re.Pattern[str], Callable[[str], bool], Callable[[str, int], bool]]] = [
    ("PRIVATE_KEY", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"), lambda v: True,
     lambda t, d: "-----BEGIN" in t),
    ("SECRET", re.compile(
        r"\b(?:sk-(?:proj-)?[A-Za-z0-9_\-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}|xox[abprs]-[A-Za-z0-9\-]{10,}"
        r"|AIza[0-9A-Za-z_\-]{35}|glpat-[A-Za-z0-9_\-]{20,})"), lambda v: True,
     lambda t, d: any(p in t for p in _SECRET_PREFIXES)),
    # key = value pairs: the value (group 1) is the secret, the key name stays readable
    ("SECRET", re.compile(r"(?i)\b(?:api[_-]?key|secret|token|password)[\"']?\s{0,3}[:=]\s{0,3}[\"']?([A-Za-z0-9_\-.+/=]{12,})"),
     lambda v: True, lambda t, d: "=" in t or ":" in t),
    ("EMAIL", re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b"), lambda v: True, lambda t, d: "@" in t),
    ("IBAN", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"), _iban, lambda t, d: d >= 2),
    ("CARD", re.compile(r"(?<![\d\-])\d(?:[ \-]?\d){12,18}(?![\d\-])"), _luhn, lambda t, d: d >= 13),
    ("SSN", re.compile(r"(?<![\d\-])\d{3}-\d{2}-\d{4}(?![\d\-])"), _ssn, lambda t, d: d >= 9 and "-" in t),
    # An address may end a sentence: a period after it is punctuation unless a digit follows.
    ("IP", re.compile(r"(?<!\d)(?<!\d\.)(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d)|(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{1,4}(?![\w]|:[\w:])"), _ip,
     lambda t, d: (d >= 4 and t.count(".") >= 3) or t.count(":") >= 2),
    ("PHONE", re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.\-]?)?(?:\(\d{1,4}\)[\s.\-]?)?\d{1,4}(?:[\s.\-]?\d{2,4}){1,5}(?![\w])"),
     _phone, lambda t, d: d >= 7),
]


def find_pii(text: str, types: tuple[str, ...] | list[str] = PII_TYPES + NER_TYPES,
             ner: Callable[[str], list[Span]] | None = None) -> list[Span]:
    """Every detected item in ``text``, without overlaps (earlier detectors win, then longer spans).

    Args:
        text: The text to scan.
        types: Which types to look for.
        ner: Optional named-entity detector for PERSON and LOCATION; the patterns win where they overlap.

    Returns:
        The spans, in text order.
    """
    if not text:
        return []
    found: list[Span] = []
    taken: list[tuple[int, int]] = []
    digits = _digits(text)
    for kind, pattern, valid, possible in _DETECTORS:
        if kind not in types or not possible(text, digits):
            continue
        g = 1 if pattern.groups else 0
        for m in pattern.finditer(text):
            start, end = m.span(g)
            if any(start < e and s < end for s, e in taken) or not valid(m.group(g)):
                continue
            if kind == "IP" and _NUMBERED.search(text, max(0, start - 24), start):
                continue  # "section 4.2.1.5", "version 1.2.3.4": a numbering, not an address
            found.append(Span(kind, start, end, m.group(g)))
            taken.append((start, end))
    if ner is not None:
        for sp in ner(text):
            if sp.type in types and not any(sp.start < e and s < sp.end for s, e in taken):
                found.append(sp)
                taken.append((sp.start, sp.end))
    return sorted(found, key=lambda s: s.start)


def redact(text: str, spans: list[Span]) -> str:
    """Replace each span with a typed placeholder such as ``<EMAIL>``."""
    out, pos = [], 0
    for sp in sorted(spans, key=lambda s: s.start):
        out += [text[pos : sp.start], f"<{sp.type}>"]
        pos = sp.end
    return "".join(out) + text[pos:]


#: Presidio entity names -> tunesmith's PII types.
_PRESIDIO_TYPES = {"PERSON": "PERSON", "LOCATION": "LOCATION"}


def presidio_detector(language: str = "en", min_score: float = 0.6) -> Callable[[str], list[Span]]:
    """A named-entity detector for names and places, backed by Microsoft Presidio (optional dependency).

    Args:
        language: Language code passed to Presidio.
        min_score: Lowest confidence kept.

    Returns:
        A function from text to PERSON/LOCATION spans.

    Raises:
        DataError: presidio-analyzer or its spaCy model is not installed.
    """
    try:
        from presidio_analyzer import AnalyzerEngine  # optional: only when data.pii.ner is presidio
    except ImportError as exc:
        raise DataError("data.pii.ner is 'presidio' but presidio-analyzer is not installed: "
                        "pip install presidio-analyzer && python -m spacy download en_core_web_lg "
                        "(or set data.pii.ner: none)") from exc
    try:
        engine = AnalyzerEngine(supported_languages=[language])
    except (OSError, ValueError) as exc:
        raise DataError(f"presidio could not start its NLP model for language {language!r}: {exc}") from exc

    def detect(text: str) -> list[Span]:
        results = engine.analyze(text=text, language=language, entities=list(_PRESIDIO_TYPES))
        return [Span(_PRESIDIO_TYPES[r.entity_type], r.start, r.end, text[r.start : r.end])
                for r in results if r.score >= min_score]

    return detect
