"""Shadow and canary traffic: trying a candidate on production's requests before it is promoted.

``--shadow candidate``: every chat request to the primary model (the first ``--run``, usually
``production``) is also answered by the candidate, after and beside the real answer, in the same
batches; the client gets production's answer only, and the log keeps both (the shadow's record
carries ``metadata.shadow_of`` = the production response id), which ``tunesmith monitor`` pairs.
``--canary candidate:0.1``: a tenth of those requests (drawn at random) are answered by the
candidate instead; the log records which run answered each one.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

from tunesmith.inference.engine import Job
from tunesmith.serve.schemas import ApiError, ChatRequest
from tunesmith.serve.served import Served, log_entry


@dataclass
class Routing:
    """Where a primary model's requests also go.

    Attributes:
        primary: The model whose requests are shadowed or split (a served name, e.g. ``production``).
        shadow: The model that answers a copy of each of them, unseen by the client.
        canary: The model that answers a share of them instead, and the share.
        rng: The canary draw.
        tasks: Shadow answers in flight (kept referenced until logged).
    """

    primary: str | None = None
    shadow: str | None = None
    canary: tuple[str, float] | None = None
    rng: random.Random = field(default_factory=random.Random)
    tasks: set[asyncio.Task] = field(default_factory=set)

    def answer_by(self, state: Any, model: str, served: Served) -> tuple[Served, str | None]:
        """The model that answers a request for ``model``: the canary for its share, else ``served``; and the route."""
        if self.canary is None or model != self.primary:
            return served, None
        name, share = self.canary
        if self.rng.random() < share and name in state.served:
            return state.served[name], "canary"
        return served, None


def parse_canary(text: str) -> tuple[str, float]:
    """``candidate:0.1`` -> ("candidate", 0.1).

    Raises:
        ValueError: Not NAME:SHARE with 0 < SHARE < 1.
    """
    name, sep, share = text.rpartition(":")
    try:
        value = float(share)
    except ValueError:
        value = -1.0
    if not sep or not name or not 0 < value < 1:
        raise ValueError(f"{text!r}: give NAME:SHARE with a share between 0 and 1, e.g. candidate:0.1")
    return name, value


def shadow_copy(state: Any, req: ChatRequest, rid: str) -> None:
    """Answer a copy of a primary request with the shadow model in the background and log it beside the original.

    A copy that cannot be queued (the server is busy) is dropped and counted, never delaying the client.
    """
    from tunesmith.serve.app import _chat_prompt, _sampling  # the handlers' own prompt and sampling rules

    routing: Routing = state.routing
    shadow = state.served.get(routing.shadow or "")
    if shadow is None or shadow.classifier is not None or state.log is None:
        return
    arrived = time.perf_counter()
    try:
        ids, _, logged = _chat_prompt(state, shadow, req.messages)
        job = Job(shadow.name, ids, _sampling(state, req, None), trie=shadow.trie)
        state.engine.submit(job)
    except (ApiError, Exception):  # noqa: BLE001 - a shadow never fails the real request
        state.metrics.errors.labels(routing.shadow, "shadow_dropped").inc()
        return

    async def record() -> None:
        try:
            c = await asyncio.wrap_future(job.done)
        except Exception:  # noqa: BLE001 - the shadow's failure is counted, not raised
            state.metrics.errors.labels(routing.shadow, "shadow_failed").inc()
            return
        entry = log_entry(f"{rid}-shadow", "chat.completions", routing.shadow or "", shadow, logged, c, arrived,
                          req.user, {"shadow_of": rid})
        await asyncio.wrap_future(state.log.record(entry))

    task = asyncio.get_running_loop().create_task(record())
    routing.tasks.add(task)
    task.add_done_callback(routing.tasks.discard)
