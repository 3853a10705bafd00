"""The request log: every request the server answered, the answer, and what users thought of it.

One SQLite file in the project (WAL), written by one thread off the request path: the server hands
it a record and waits for the commit before the client gets the answer, so a response a client
received is in the log even if the server is killed the next instant. Records are written in
groups (one transaction for whatever queued up meanwhile), so the wait costs one fsync per group,
not per request. Personal data is scrubbed before anything is written (the data step's scrubber).
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tunesmith.data.pii import find_pii, redact
from tunesmith.errors import UserError

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY, created TEXT NOT NULL, endpoint TEXT NOT NULL, model TEXT NOT NULL, run_id TEXT,
    messages TEXT NOT NULL, answer TEXT NOT NULL, label TEXT, probability REAL,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, latency_ms REAL NOT NULL,
    first_token_ms REAL NOT NULL, finish_reason TEXT NOT NULL, user TEXT, metadata TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS requests_created ON requests(created);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT, response_id TEXT NOT NULL REFERENCES requests(id), created TEXT NOT NULL,
    rating INTEGER, comment TEXT, correction TEXT);
CREATE INDEX IF NOT EXISTS feedback_response ON feedback(response_id);
"""


def now_iso() -> str:
    """The current UTC time as ISO 8601 (what the log's ``created`` columns hold)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class LoggedRequest:
    """One answered request, as the log keeps it.

    Attributes:
        id: The response id the client got (``chatcmpl-...`` or ``cmpl-...``); feedback refers to it.
        endpoint: ``chat.completions`` or ``completions``.
        model: The served model's name (run id, adapter name or the base).
        run_id: The run the adapter came from, if any.
        messages: What the client sent, as chat messages (a completion's prompt is one user message).
        answer: What the server answered.
        prompt_tokens: Tokens of the rendered prompt.
        completion_tokens: Tokens generated.
        latency_ms: From arrival to the answer.
        first_token_ms: From arrival to the first token.
        finish_reason: ``stop`` or ``length``.
        label: The label chosen within the label set, for a classification run.
        probability: That label's probability.
        user: The client's ``user`` field.
        metadata: The client's ``metadata`` field.
        created: When it was answered (UTC, ISO 8601).
    """

    id: str
    endpoint: str
    model: str
    run_id: str | None
    messages: list[dict[str, str]]
    answer: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    first_token_ms: float
    finish_reason: str
    label: str | None = None
    probability: float | None = None
    user: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=now_iso)


@dataclass(frozen=True)
class Feedback:
    """What a user thought of an answer.

    Attributes:
        response_id: The answer's id.
        rating: 1-5 (thumbs down is stored as 1, up as 5); None when only a comment or a correction is given.
        comment: Free text.
        correction: The answer the user would have wanted.
        created: When it was given.
    """

    response_id: str
    rating: int | None = None
    comment: str | None = None
    correction: str | None = None
    created: str = field(default_factory=now_iso)


def scrub(text: str | None) -> str | None:
    """``text`` with personal data replaced by typed placeholders (``<EMAIL>``...)."""
    return redact(text, find_pii(text)) if text else text


def _scrubbed(item: LoggedRequest | Feedback) -> LoggedRequest | Feedback:
    if isinstance(item, Feedback):
        return Feedback(item.response_id, item.rating, scrub(item.comment), scrub(item.correction), item.created)
    messages = [{**m, "content": scrub(m.get("content", "")) or ""} for m in item.messages]
    return LoggedRequest(**{**asdict(item), "messages": messages, "answer": scrub(item.answer) or ""})


@contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    con = sqlite3.connect(path, timeout=30)
    con.row_factory = sqlite3.Row
    try:
        yield con
    finally:
        con.close()


class RequestLog:
    """The log's one writer: :meth:`record` and :meth:`feedback` return futures resolved once committed.

    Args:
        path: The SQLite file (created with its folder).
        scrub_pii: Scrub personal data before writing.
    """

    def __init__(self, path: Path, scrub_pii: bool = True):
        self.path, self.scrub_pii = Path(path), scrub_pii
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _connect(self.path) as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(SCHEMA)
        self._queue: queue.Queue[tuple[LoggedRequest | Feedback, Future] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._write_loop, name="tunesmith-request-log", daemon=True)
        self._thread.start()

    def record(self, entry: LoggedRequest) -> Future:
        """Queue a request for writing; the future resolves when it is committed."""
        return self._put(entry)

    def feedback(self, item: Feedback) -> Future:
        """Queue feedback for writing; the future resolves when it is committed."""
        return self._put(item)

    def has(self, response_id: str) -> bool:
        """Whether a response with this id is logged."""
        with _connect(self.path) as con:
            return con.execute("SELECT 1 FROM requests WHERE id = ?", (response_id,)).fetchone() is not None

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the writer."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _put(self, item: LoggedRequest | Feedback) -> Future:
        fut: Future = Future()
        self._queue.put((item, fut))
        return fut

    def _write_loop(self) -> None:
        con = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        con.execute("PRAGMA synchronous=FULL")  # a committed record survives a power cut, not only a killed process
        stopping = False
        while not stopping:
            first = self._queue.get()
            batch = []
            if first is None:
                stopping = True
            else:
                batch.append(first)
            while True:  # group commit: everything queued meanwhile goes in the same transaction
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                else:
                    batch.append(item)
            if not batch:
                continue
            try:
                with con:
                    for item, _ in batch:
                        self._insert(con, _scrubbed(item) if self.scrub_pii else item)
            except Exception as exc:  # noqa: BLE001 - the callers learn it; the writer goes on
                for _, fut in batch:
                    fut.set_exception(exc)
                continue
            for _, fut in batch:
                fut.set_result(None)
        con.close()

    @staticmethod
    def _insert(con: sqlite3.Connection, item: LoggedRequest | Feedback) -> None:
        if isinstance(item, Feedback):
            con.execute("INSERT INTO feedback (response_id, created, rating, comment, correction) VALUES (?, ?, ?, ?, ?)",
                        (item.response_id, item.created, item.rating, item.comment, item.correction))
            return
        row = asdict(item)
        row["messages"] = json.dumps(item.messages, ensure_ascii=False)
        row["metadata"] = json.dumps(item.metadata, ensure_ascii=False)
        cols = ", ".join(row)
        con.execute(f"INSERT INTO requests ({cols}) VALUES ({', '.join('?' * len(row))})", list(row.values()))


def read_log(path: Path, since: str | None = None, model: str | None = None) -> list[dict[str, Any]]:
    """The logged requests (oldest first) with their feedback (a list under ``feedback``).

    Args:
        path: The log file.
        since: Only requests at or after this ISO time (a date is its midnight UTC).
        model: Only requests to this served model.

    Raises:
        UserError: No log file there.
    """
    if not Path(path).is_file():
        raise UserError(f"no request log at {path} (tunesmith serve writes it; serve.log.path)")
    where, args = [], []
    if since:
        where.append("created >= ?")
        args.append(_since(since))
    if model:
        where.append("model = ?")
        args.append(model)
    sql = "SELECT * FROM requests" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY created, id"
    with _connect(Path(path)) as con:
        rows = [dict(r) for r in con.execute(sql, args)]
        notes: dict[str, list[dict[str, Any]]] = {}
        for f in con.execute("SELECT * FROM feedback ORDER BY id"):
            notes.setdefault(f["response_id"], []).append(dict(f))
    for row in rows:
        row["messages"] = json.loads(row["messages"])
        row["metadata"] = json.loads(row["metadata"])
        row["feedback"] = notes.get(row["id"], [])
    return rows


def _since(value: str) -> str:
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise UserError(f"--since: {value!r} is not a date or time (e.g. 2026-12-01 or 2026-12-01T09:00)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class LogExport:
    """What ``logs export`` wrote: rows, how many had feedback and corrections, where."""

    rows: int
    with_feedback: int
    corrected: int
    out: str


def export_log(path: Path, out: Path, since: str | None = None, model: str | None = None,
               only_feedback: bool = False) -> LogExport:
    """Write logged traffic as chat ``messages`` rows for review and training.

    Each row is the client's messages and the answer (the user's correction where one was given),
    marked ``needs_review: true`` with its provenance (response id, model, run, ratings, comments),
    so it goes through ``tunesmith data review`` before it trains anything.

    Raises:
        UserError: No log file there.
    """
    rows = read_log(path, since, model)
    written = with_feedback = corrected = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            notes = row["feedback"]
            if only_feedback and not notes:
                continue
            correction = next((n["correction"] for n in reversed(notes) if n["correction"]), None)
            messages = [*row["messages"], {"role": "assistant", "content": correction or row["answer"]}]
            fh.write(json.dumps({
                "messages": messages, "needs_review": True,
                "provenance": {"method": "request_log", "response_id": row["id"], "model": row["model"],
                               "run_id": row["run_id"], "created": row["created"], "answer": row["answer"],
                               "corrected": correction is not None,
                               "ratings": [n["rating"] for n in notes if n["rating"] is not None],
                               "comments": [n["comment"] for n in notes if n["comment"]]},
            }, ensure_ascii=False) + "\n")
            written += 1
            with_feedback += bool(notes)
            corrected += correction is not None
    tmp.replace(out)
    return LogExport(written, with_feedback, corrected, str(out))
