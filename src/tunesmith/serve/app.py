"""The OpenAI-compatible HTTP API over the engine: models, chat and text completions, feedback, adapters.

Handlers validate and render the request, hand a :class:`~tunesmith.inference.engine.Job` to the
engine thread and wait for it without blocking the event loop; streamed answers go out as
server-sent events as the engine produces them. Before a client gets the end of an answer, the
request is committed to the request log, so what a client received is never missing from it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tunesmith.data.encode import fit_prompt, head_prompt, render_prompt_text
from tunesmith.data.examples import Example
from tunesmith.errors import DataError, UserError
from tunesmith.inference.engine import Completion, Engine, EngineStopped, Job, QueueFull, Sampling
from tunesmith.monitor.requestlog import Feedback, RequestLog
from tunesmith.serve.metrics import ServerMetrics
from tunesmith.serve.schemas import (AdapterRequest, ApiError, ChatRequest, CompletionRequest, FeedbackRequest,
                                     Message, parse)
from tunesmith.serve.routing import Routing, shadow_copy
from tunesmith.serve.served import Served, load_classifier, log_entry, served_adapter, served_run
from tunesmith.config import ServeConfig


@dataclass
class ServerState:
    """Everything the handlers share.

    Attributes:
        engine: The continuous-batching engine (owns the model).
        served: Name -> what is served under it (the base included).
        config: The ``serve`` section (limits, log).
        api_key: The key clients send; None only with ``--no-auth`` on loopback.
        admin_key: The key that adds and removes adapters (the API key when unset).
        log: The request log, or None when opted out.
        runs_dir: Where ``POST /v1/adapters`` looks runs up.
        context_length: The base model's longest sequence (the prompt limit when none is set).
    """

    engine: Engine
    served: dict[str, Served]
    config: ServeConfig
    api_key: str | None
    admin_key: str | None
    log: RequestLog | None
    runs_dir: Path
    context_length: int
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    started: int = field(default_factory=lambda: int(time.time()))
    base_path: Path | None = None
    precision: str = "auto"
    trust_remote_code: bool = False
    routing: Routing = field(default_factory=Routing)

    @property
    def tokenizer(self) -> Any:
        return self.engine.lm.tokenizer

    def model(self, name: str) -> Served:
        served = self.served.get(name)
        if served is None:
            raise ApiError(404, f"the model {name!r} does not exist; GET /v1/models lists the served ones "
                                f"({', '.join(self.served)})", "model", "model_not_found")
        return served


def _error(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


async def _body(request: Request, limit: int) -> Any:
    """The JSON body, read up to ``limit`` bytes.

    Raises:
        ApiError: 413 over the limit, 400 when it is not JSON.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body has {declared} bytes, over the limit of {limit} (serve.limits.max_body_bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the request body is over the limit of {limit} bytes (serve.limits.max_body_bytes)")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks) or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None


def _check_key(request: Request, key: str | None, what: str = "an API key") -> None:
    if key is None:
        return
    given = request.headers.get("authorization", "")
    token = given[7:] if given.lower().startswith("bearer ") else ""
    if not token or not hmac.compare_digest(token.encode(), key.encode()):
        raise ApiError(401, f"this server needs {what}: send it as 'Authorization: Bearer KEY'", None, "invalid_api_key")


def _chat_prompt(state: ServerState, served: Served, messages: list[Message], tokenizer: Any = None,
                 head: bool = False) -> tuple[list[int], bool, list[dict[str, str]]]:
    """The prompt's token ids, rendered as the run's evaluation rendered it (``head``: as a classification head
    reads it, one message, fitted one token shorter), whether it was shortened, and the messages as logged."""
    system = [m.text() for m in messages if m.role in ("system", "developer")]
    turns = [{"role": m.role, "content": m.text()} for m in messages if m.role not in ("system", "developer")]
    if not turns or turns[-1]["role"] != "user":
        raise ApiError(400, "the last message must be the user's (the answer is the assistant's next turn)", "messages")
    example = Example(id="request", prompt=turns[-1]["content"], target="", system="\n".join(system) if system else None,
                      turns=turns + [{"role": "assistant", "content": ""}] if len(turns) > 1 and not head else None)
    tok = tokenizer or state.tokenizer
    full = len(tok(render_prompt_text(tok, example, served.system_prompt), add_special_tokens=False)["input_ids"])
    _check_prompt_length(state, full, "messages")
    try:
        fit = head_prompt if head else fit_prompt
        ids, shortened = fit(tok, example, served.system_prompt, served.max_seq_len)
    except DataError as exc:
        raise ApiError(400, str(exc), "messages", "context_length_exceeded") from None
    logged = [{"role": "system", "content": s} for s in system] + turns
    return ids, shortened, logged


def _check_prompt_length(state: ServerState, tokens: int, param: str) -> None:
    limit = state.config.limits.max_prompt_tokens or state.context_length
    if tokens > limit:
        raise ApiError(400, f"the prompt takes {tokens} tokens, over the limit of {limit} (serve.limits.max_prompt_tokens)",
                       param, "context_length_exceeded")


def _sampling(state: ServerState, req: ChatRequest | CompletionRequest, logprobs: int | None) -> Sampling:
    limits = state.config.limits
    asked = getattr(req, "max_completion_tokens", None) or req.max_tokens
    if asked is not None and asked > limits.max_tokens:
        field_name = "max_completion_tokens" if getattr(req, "max_completion_tokens", None) else "max_tokens"
        raise ApiError(400, f"{field_name} is {asked}, over the limit of {limits.max_tokens} (serve.limits.max_tokens)",
                       field_name)
    # temperature 0 by default: the greedy answers evaluation measured (OpenAI's own default is 1)
    return Sampling(max_tokens=asked or limits.default_max_tokens, temperature=req.temperature or 0.0,
                    top_p=req.top_p if req.top_p is not None else 1.0, seed=req.seed, stop=req.stops(), logprobs=logprobs)


def create_app(state: ServerState, on_shutdown: Callable[[], None] | None = None) -> FastAPI:
    """The FastAPI application over ``state``."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if on_shutdown is not None:
            await asyncio.get_running_loop().run_in_executor(None, on_shutdown)

    app = FastAPI(title="tunesmith serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.tunesmith = state

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        model = getattr(request.state, "model", "-")
        state.metrics.errors.labels(model, exc.code or str(exc.status)).inc()
        endpoint = {"/v1/chat/completions": "chat.completions", "/v1/completions": "completions"}.get(
            request.url.path, request.url.path)
        state.metrics.requests.labels(model, endpoint, str(exc.status)).inc()
        return _error(exc)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        state.metrics.errors.labels(getattr(request.state, "model", "-"), "internal").inc()
        return _error(ApiError(500, f"the server failed on this request: {type(exc).__name__}", None, "internal_error"))

    @app.exception_handler(404)
    async def _not_found(request: Request, exc: Exception) -> JSONResponse:
        return _error(ApiError(404, f"no such endpoint: {request.method} {request.url.path}", None, "unknown_url"))

    @app.exception_handler(405)
    async def _bad_method(request: Request, exc: Exception) -> JSONResponse:
        return _error(ApiError(405, f"{request.method} is not allowed on {request.url.path}", None, "method_not_allowed"))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        eng = state.engine
        return {"status": "ok", "models": list(state.served), "running": eng.running(), "waiting": eng.waiting()}

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        _check_key(request, state.api_key)
        return Response(state.metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        _check_key(request, state.api_key)
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": state.started, "owned_by": "tunesmith", "tunesmith": s.info}
            for name, s in state.served.items()]}

    async def read(request: Request, kind: type[ChatRequest] | type[CompletionRequest]) -> tuple[Any, Served]:
        """The checked key, the validated body and the served model it names."""
        _check_key(request, state.api_key)
        req = parse(kind, await _body(request, state.config.limits.max_body_bytes))
        request.state.model = req.model
        return req, state.model(req.model)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        req, served = await read(request, ChatRequest)
        served, route = state.routing.answer_by(state, req.model, served)
        shadowed = state.routing.shadow is not None and req.model == state.routing.primary
        if served.classifier is not None:
            return await _classify(state, req, served, route)
        ids, shortened, logged = _chat_prompt(state, served, req.messages)
        constrained = served.trie is not None and (req.tunesmith is None or req.tunesmith.constrained is not False)
        logprobs = (req.top_logprobs or 0) if req.logprobs else None
        job = Job(served.name if served.adapter else _base(state), ids, _sampling(state, req, logprobs),
                  trie=served.trie if constrained else None)
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        extra = {"truncated": shortened, "run_id": _run_id(served), **({"route": route} if route else {})}
        if shadowed:
            shadow_copy(state, req, rid)
        return await _answer(state, request, req, served, job, rid, logged, "chat.completions", extra)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        req, served = await read(request, CompletionRequest)
        if served.classifier is not None:
            raise ApiError(400, f"{req.model} has a classification head: it answers chat messages with a label "
                                "(POST /v1/chat/completions)", "model", "classifier_only")
        ids = state.tokenizer(req.text())["input_ids"]
        _check_prompt_length(state, len(ids), "prompt")
        if not ids:
            raise ApiError(400, "the prompt is empty", "prompt")
        job = Job(served.name if served.adapter else _base(state), ids, _sampling(state, req, req.logprobs))
        rid = f"cmpl-{uuid.uuid4().hex}"
        return await _answer(state, request, req, served, job, rid, [{"role": "user", "content": req.text()}],
                             "completions", {"run_id": _run_id(served)})

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> dict[str, Any]:
        _check_key(request, state.api_key)
        req: FeedbackRequest = parse(FeedbackRequest, await _body(request, state.config.limits.max_body_bytes))
        if state.log is None:
            raise ApiError(409, "the request log is off (serve.log.enabled: false), so feedback has nothing to refer to",
                           "response_id", "log_disabled")
        if req.rating is None and not req.comment and req.correction is None:
            raise ApiError(400, "give a rating, a comment or a correction", "rating")
        if not await asyncio.to_thread(state.log.has, req.response_id):
            raise ApiError(404, f"no logged response {req.response_id!r}", "response_id", "response_not_found")
        await asyncio.wrap_future(state.log.feedback(Feedback(req.response_id, req.score(), req.comment, req.correction)))
        return {"object": "feedback", "response_id": req.response_id, "stored": True}

    @app.post("/v1/adapters")
    async def add_adapter(request: Request) -> dict[str, Any]:
        _check_key(request, state.admin_key, "the admin key")
        req: AdapterRequest = parse(AdapterRequest, await _body(request, state.config.limits.max_body_bytes))
        if (req.path is None) == (req.run is None):
            raise ApiError(400, "give either path (an adapter folder) or run (a run id or folder)", "path")
        try:
            if req.run is not None:
                served, _ = await asyncio.to_thread(served_run, req.run, state.runs_dir)
                if req.name:
                    served.name, served.follows = req.name, None
            else:
                if not req.name:
                    raise ApiError(400, "an adapter given by path needs a name", "name")
                served = await asyncio.to_thread(served_adapter, req.name, Path(req.path or ""))
        except UserError as exc:
            raise ApiError(400, str(exc), "run" if req.run else "path", "bad_adapter") from None
        if served.public_name in state.served:
            raise ApiError(409, f"{served.public_name!r} is already served; DELETE /v1/adapters/{served.public_name} "
                                "first", "name",
                           "already_served")
        try:
            if served.head:
                await asyncio.to_thread(load_classifier, served, state.base_path, state.precision,
                                        state.trust_remote_code)
            elif served.name not in state.engine.adapters:
                await asyncio.wrap_future(state.engine.add_adapter(served.name, served.adapter))
        except Exception as exc:  # noqa: BLE001 - a folder PEFT cannot load is the client's error, not the server's
            raise ApiError(400, f"cannot load the adapter: {exc}", "path", "bad_adapter") from None
        state.served[served.public_name] = served.with_tokenizer(state.tokenizer)
        if not served.head:
            set_opening(state, served)
        return {"object": "adapter", "id": served.public_name, "tunesmith": served.info}

    @app.delete("/v1/adapters/{name}")
    async def remove_adapter(name: str, request: Request) -> dict[str, Any]:
        _check_key(request, state.admin_key, "the admin key")
        served = state.model(name)
        if served.adapter is None:
            raise ApiError(400, "the base model is always served", "name", "cannot_remove_base")
        del state.served[name]
        if served.classifier is None and not any(s.name == served.name for s in state.served.values()):
            state.engine.remove_adapter(served.name)
        return {"object": "adapter", "id": name, "deleted": True}

    return app


def _base(state: ServerState) -> str:
    return state.engine.base_name


def set_opening(state: ServerState, served: Served) -> None:
    """Tell the engine the token ids every chat prompt of ``served`` opens with, so it caches them once."""
    tok = state.tokenizer
    a, b = (tok(render_prompt_text(tok, Example(id="x", prompt=t, target=""), served.system_prompt),
                add_special_tokens=False)["input_ids"] for t in ("a", "b"))
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    state.engine.set_opening(served.name if served.adapter else state.engine.base_name, a[:n])


async def _wait(request: Request, state: ServerState, job: Job) -> Completion:
    """The finished job; the client going away cancels it (its batch row is freed at the next step)."""
    fut = asyncio.wrap_future(job.done)
    try:
        while True:
            done, _ = await asyncio.wait({fut}, timeout=0.5)
            if done:
                return fut.result()
            if await request.is_disconnected():  # counted as client_closed by the error handler
                state.engine.cancel(job)
                raise ApiError(499, "the client went away", None, "client_closed")
    except asyncio.CancelledError:
        state.engine.cancel(job)
        raise


def _submit(state: ServerState, job: Job) -> None:
    try:
        state.engine.submit(job)
    except QueueFull as exc:
        raise ApiError(429, f"the server is busy: {exc}; try again shortly", None, "queue_full") from None
    except EngineStopped as exc:
        raise ApiError(503, str(exc), None, "shutting_down") from None
    except KeyError:
        raise ApiError(404, f"the model {job.adapter!r} is no longer served", "model", "model_not_found") from None


async def _classify(state: ServerState, req: ChatRequest, served: Served, route: str | None = None) -> Response:
    """A classification-head run's answer: one forward pass, the most probable label, every label's probability."""
    from rich.progress import Progress

    from tunesmith.inference.classify import classify_batched, most_probable

    lm = served.classifier
    ids, shortened, logged = _chat_prompt(state, served, req.messages, lm.tokenizer, head=True)
    arrived = time.perf_counter()

    def forward() -> list[float]:
        with served.lock, Progress(disable=True) as quiet:  # one forward at a time on this model
            return classify_batched(lm, [ids], 1, progress=(quiet, quiet.add_task("serve", total=1)))[0]

    probs = await asyncio.to_thread(forward)
    label, probability = most_probable(served.labels or [], probs)
    took = time.perf_counter() - arrived
    c = Completion(text=label, finish_reason="stop", prompt_tokens=len(ids), completion_tokens=0, label=label,
                   probability=probability, seconds=took, first_token_seconds=took)
    rid = f"chatcmpl-{uuid.uuid4().hex}"
    await _record(state, req, served, rid, "chat.completions", logged, c, arrived, route)
    extra = {"truncated": shortened, "run_id": _run_id(served), **({"route": route} if route else {}), "probabilities": dict(zip(served.labels or [], (round(p, 6) for p in probs)))}
    created = int(time.time())
    if not req.stream:
        return JSONResponse(_reply("chat.completions", rid, req.model, created, c, extra))

    def chunk(delta: dict[str, Any], finish: str | None = None, **more: Any) -> str:
        return "data: " + json.dumps({"id": rid, "object": "chat.completion.chunk", "created": created,
                                      "model": req.model, "choices": [{"index": 0, "delta": delta,
                                                                       "finish_reason": finish, "logprobs": None}],
                                      **more}, ensure_ascii=False) + "\n\n"

    async def events() -> AsyncIterator[str]:
        yield chunk({"role": "assistant", "content": label})
        yield chunk({}, "stop", tunesmith=_extension(c, extra))
        if req.stream_options is not None and req.stream_options.include_usage:
            yield "data: " + json.dumps({"id": rid, "object": "chat.completion.chunk", "created": created,
                                         "model": req.model, "choices": [], "usage": _usage(c)}) + "\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _run_id(served: Served) -> str | None:
    """The run that answered (under an alias, whichever run held it when the request arrived)."""
    return served.run.id if served.run else None


def _usage(c: Completion) -> dict[str, int]:
    return {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
            "total_tokens": c.prompt_tokens + c.completion_tokens}


def _extension(c: Completion, extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(extra)
    if c.label is not None:
        out.update(label=c.label, probability=c.probability)
    return out


def _chat_logprobs(c: Completion) -> dict[str, Any] | None:
    if c.logprobs is None:
        return None
    return {"content": [{"token": t, "logprob": lp, "bytes": list(t.encode()),
                         "top_logprobs": [{"token": a, "logprob": alp, "bytes": list(a.encode())} for a, alp in alts]}
                        for t, lp, alts in c.logprobs]}


def _completion_logprobs(c: Completion) -> dict[str, Any] | None:
    if c.logprobs is None:
        return None
    offsets, at = [], 0
    for t, _, _ in c.logprobs:
        offsets.append(at)
        at += len(t)
    return {"tokens": [t for t, _, _ in c.logprobs], "token_logprobs": [lp for _, lp, _ in c.logprobs],
            "top_logprobs": [dict(alts) for _, _, alts in c.logprobs], "text_offset": offsets}


def _reply(kind: str, rid: str, model: str, created: int, c: Completion, extra: dict[str, Any]) -> dict[str, Any]:
    if kind == "chat.completions":
        choice = {"index": 0, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason,
                  "logprobs": _chat_logprobs(c)}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": c.text, "finish_reason": c.finish_reason, "logprobs": _completion_logprobs(c)}
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice], "usage": _usage(c),
            "tunesmith": _extension(c, extra)}


async def _record(state: ServerState, req: ChatRequest | CompletionRequest, served: Served, rid: str, kind: str,
                  messages: list[dict[str, str]], c: Completion, arrived: float, route: str | None = None) -> None:
    """Count the answer and commit it to the request log (before the client gets its end)."""
    m = state.metrics
    m.requests.labels(req.model, kind, "200").inc()
    m.prompt_tokens.labels(req.model).inc(c.prompt_tokens)
    m.generated_tokens.labels(req.model).inc(c.completion_tokens)
    m.latency.labels(req.model).observe(time.perf_counter() - arrived)
    m.first_token.labels(req.model).observe(c.first_token_seconds)
    if state.log is None:
        return
    entry = log_entry(rid, kind, req.model, served, messages, c, arrived, req.user,
                      {**(req.metadata or {}), **({"tunesmith_route": route} if route else {})})
    await asyncio.wrap_future(state.log.record(entry))


async def _answer(state: ServerState, request: Request, req: ChatRequest | CompletionRequest, served: Served, job: Job,
                  rid: str, messages: list[dict[str, str]], kind: str, extra: dict[str, Any]) -> Response:
    arrived, created = job.submitted, int(time.time())
    if not req.stream:
        _submit(state, job)
        c = await _wait(request, state, job)
        await _record(state, req, served, rid, kind, messages, c, arrived, extra.get("route"))
        return JSONResponse(_reply(kind, rid, req.model, created, c, extra))

    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str | None] = asyncio.Queue()
    job.on_text = lambda text: loop.call_soon_threadsafe(pieces.put_nowait, text)
    job.done.add_done_callback(lambda _: loop.call_soon_threadsafe(pieces.put_nowait, None))
    _submit(state, job)
    chat = kind == "chat.completions"
    obj = "chat.completion.chunk" if chat else "text_completion"

    def chunk(delta: dict[str, Any] | str, finish: str | None = None, **more: Any) -> str:
        choice = ({"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None} if chat
                  else {"index": 0, "text": delta, "finish_reason": finish, "logprobs": None})
        return "data: " + json.dumps({"id": rid, "object": obj, "created": created, "model": req.model,
                                      "choices": [choice], **more}, ensure_ascii=False) + "\n\n"

    async def events() -> AsyncIterator[str]:
        try:
            if chat:
                yield chunk({"role": "assistant", "content": ""})
            # a label answer is streamed once it is complete: pieces of a label are not the label
            while job.trie is None and (piece := await pieces.get()) is not None:
                yield chunk({"content": piece} if chat else piece)
            try:
                c = await asyncio.wrap_future(job.done)
            except Exception as exc:  # noqa: BLE001 - the stream ends with an error event rather than silently
                yield "data: " + json.dumps(ApiError(500, f"generation failed: {exc}").body()) + "\n\n"
                return
            if job.trie is not None:
                yield chunk({"content": c.text} if chat else c.text)
            await _record(state, req, served, rid, kind, messages, c, arrived, extra.get("route"))
            yield chunk({} if chat else "", c.finish_reason, tunesmith=_extension(c, extra))
            if req.stream_options is not None and req.stream_options.include_usage:
                yield "data: " + json.dumps({"id": rid, "object": obj, "created": created, "model": req.model,
                                             "choices": [], "usage": _usage(c)}) + "\n\n"
            yield "data: [DONE]\n\n"
        finally:
            if not job.done.done():  # the client went away mid-stream: free its row
                state.engine.cancel(job)
                state.metrics.errors.labels(req.model, "client_closed").inc()

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
