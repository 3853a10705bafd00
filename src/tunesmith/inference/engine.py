"""Continuous batching on one base model with many adapters: the engine behind ``tunesmith serve``.

One thread owns the model. Between two decode steps it admits waiting requests (their prompts
prefilled together, starting from the cached key/values of their adapter's shared opening), then
runs one decode step for every running row at once, and lets finished rows leave at once. Rows of
different adapters share the batch: each LoRA layer keeps its adapters' matrices stacked and every
row gathers its own (:mod:`tunesmith.inference.multilora`), so serving four adapters costs about
what one does.

The running batch is left-padded: a new group is merged in by padding the shorter cache on the
left, and columns every row has masked are dropped when rows leave. Positions follow the attention
mask, so a row computes what it would alone (in fp32 the answers equal evaluation's; a test pins it).
Transformers' own continuous batching has neither per-row adapters, nor a cached shared opening,
nor decoding within a label set, which is why this is written here.
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch
from peft import PeftModel
from transformers import DynamicCache

from tunesmith.inference.constrained import LabelTrie
from tunesmith.inference.multilora import MultiLora
from tunesmith.models.load import LoadedModel
from tunesmith.models.precision import inference_weights
from tunesmith.train.batching import MIN_PREFIX_TOKENS
from tunesmith.train.loss import repeat_cache

class QueueFull(Exception):
    """More requests are waiting than the engine's queue holds."""


class EngineStopped(Exception):
    """The engine is shutting down and takes no new request."""


@dataclass(frozen=True)
class Sampling:
    """How a request's tokens are chosen.

    Attributes:
        max_tokens: Most tokens to generate.
        temperature: 0 is greedy (what evaluation measured); above 0 samples.
        top_p: Nucleus sampling's probability mass (with temperature above 0).
        seed: Seeds this request's sampling, so the same request gives the same text.
        stop: Strings that end the answer (not included in it).
        logprobs: Return each chosen token's log-probability and this many top alternatives (None: none).
    """

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: int | None = None


@dataclass
class Completion:
    """A finished request.

    Attributes:
        text: The answer (for a label-set request: the label).
        finish_reason: ``stop`` (end of turn, a stop string, a complete label) or ``length``.
        prompt_tokens: Tokens of the prompt.
        completion_tokens: Tokens generated.
        label: The label chosen within the label set, for a request decoded within it.
        probability: That label's probability, renormalised over the labels.
        logprobs: Per generated token: (token text, log-probability, [(alternative, log-probability)...]).
        seconds: From admission to the end.
        first_token_seconds: From submission to the first token.
    """

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    label: str | None = None
    probability: float | None = None
    logprobs: list[tuple[str, float, list[tuple[str, float]]]] | None = None
    seconds: float = 0.0
    first_token_seconds: float = 0.0


@dataclass(eq=False)
class Job:
    """One request inside the engine.

    Attributes:
        adapter: The served adapter's name (the engine's :attr:`Engine.base_name` for the untuned model).
        prompt: Token ids of the prompt.
        sampling: How tokens are chosen.
        trie: Decode within these labels (None: free).
        on_text: Called from the engine thread with each new piece of the answer (streaming); may be None.
        done: Resolved with the :class:`Completion`, or with the error that ended the request.
    """

    adapter: str
    prompt: list[int]
    sampling: Sampling
    trie: LabelTrie | None = None
    on_text: Callable[[str], None] | None = None
    done: Future = field(default_factory=Future)
    submitted: float = field(default_factory=time.perf_counter)
    cancelled: bool = False
    generated: list[int] = field(default_factory=list)
    sent: str = ""
    label_logprob: float = 0.0
    logprobs: list[tuple[str, float, list[tuple[str, float]]]] = field(default_factory=list)
    first_token: float | None = None
    generator: torch.Generator | None = None


@dataclass
class _Opening:
    tokens: list[int]
    cache: DynamicCache | None = None


class Engine:
    """Continuous batching over one base model and its adapters (see the module docstring).

    Args:
        lm: The base model and tokenizer; adapters are added with :meth:`add_adapter`.
        base_name: The name the untuned base is served under.
        max_batch: Most rows decoded together.
        max_queue: Most requests waiting to join; beyond it :meth:`submit` raises :class:`QueueFull`.
        on_step: Called after each decode step with the adapters of the running rows and of the waiting
            requests, for metrics.
        thread: Run the engine in a thread of its own; False leaves it to the caller to call :meth:`run`
            (the server runs it in the main thread, where PyTorch's CPU kernels ran a third faster
            than in a second thread, measured on 32 rows).
    """

    def __init__(self, lm: LoadedModel, base_name: str, max_batch: int = 32, max_queue: int = 256,
                 on_step: Callable[[list[str], list[str]], None] | None = None, thread: bool = True):
        self.lm, self.base_name = lm, base_name
        self.max_batch, self.max_queue, self.on_step = max_batch, max_queue, on_step
        self.adapters: set[str] = set()
        self._openings: dict[str, _Opening] = {}
        self._waiting: deque[Job] = deque()
        self._commands: deque[tuple[Callable[[], Any], Future]] = deque()
        self._rows: list[Job] = []
        self._multi: MultiLora | None = None
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None
        self._lock = threading.Condition()
        self._stopping = False
        self._ended = threading.Event()
        lm.model.eval()
        inference_weights(lm.model, lm.autocast_dtype)  # the server never trains: bf16 weights, cast once
        if thread:
            threading.Thread(target=self.run, name="tunesmith-engine", daemon=True).start()

    # --- what callers use (any thread) ------------------------------------------------------

    def submit(self, job: Job) -> Future:
        """Queue ``job``; its ``done`` future resolves when it finishes.

        Raises:
            QueueFull: The queue is full.
            EngineStopped: The engine is stopping.
            KeyError: No such adapter.
        """
        with self._lock:
            if self._stopping:
                raise EngineStopped("the server is shutting down")
            if job.adapter != self.base_name and job.adapter not in self.adapters:
                raise KeyError(job.adapter)
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are already waiting (limits.max_queue)")
            self._waiting.append(job)
            self._lock.notify()
        return job.done

    def cancel(self, job: Job) -> None:
        """Drop ``job`` (its client went away): it leaves the batch before the next step."""
        job.cancelled = True

    def set_opening(self, adapter: str, tokens: Sequence[int]) -> None:
        """The token ids every prompt of ``adapter`` opens with (system prompt, label list): cached once, on first use."""
        with self._lock:
            self._openings[adapter] = _Opening(list(tokens)) if len(tokens) >= MIN_PREFIX_TOKENS else _Opening([])

    def add_adapter(self, name: str, path: Any) -> Future:
        """Load the PEFT adapter at ``path`` as ``name`` between two steps (requests in flight go on)."""
        return self._command(lambda: self._load(name, path))

    def load_adapter_now(self, name: str, path: Any) -> None:
        """Load an adapter at once, in the caller's thread: only before :meth:`run` starts (the server's start-up)."""
        self._load(name, path)

    def remove_adapter(self, name: str) -> Future:
        """Stop serving ``name``: new requests are refused at once; it is unloaded once its running rows finish."""
        with self._lock:
            self.adapters.discard(name)
        return self._command(lambda: self._unload(name))

    def waiting(self) -> int:
        """Requests waiting to join the batch."""
        return len(self._waiting)

    def running(self) -> int:
        """Rows in the running batch."""
        return len(self._rows)

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new requests, finish the ones queued and running (up to ``timeout`` seconds), then stop."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        self._ended.wait(timeout)
        with self._lock:  # whatever is left past the timeout fails rather than hangs
            for job in [*self._waiting, *self._rows]:
                if not job.done.done():
                    job.done.set_exception(EngineStopped("the server shut down before the answer was finished"))

    # --- the engine thread ---------------------------------------------------------------------

    def _command(self, fn: Callable[[], Any]) -> Future:
        fut: Future = Future()
        with self._lock:
            self._commands.append((fn, fut))
            self._lock.notify()
        return fut

    def run(self) -> None:
        """Admit, decode and finish requests until :meth:`stop` (the engine thread, or the caller's)."""
        try:
            self._loop()
        finally:
            self._ended.set()

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not (self._waiting or self._rows or self._commands or self._stopping):
                    self._lock.wait()
                if self._stopping and not (self._waiting or self._rows or self._commands):
                    return
                commands = list(self._commands)
                self._commands.clear()
                room = self.max_batch - len(self._rows)
                joining = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
            for fn, fut in commands:
                try:
                    fut.set_result(fn())
                except Exception as exc:  # a bad adapter folder fails its own call, not the engine
                    fut.set_exception(exc)
            try:
                with torch.no_grad(), self.lm.autocast(), warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)
                    joining = [j for j in joining if not self._drop_if_cancelled(j)]
                    if joining:
                        self._admit(joining)
                    if self._rows:
                        self._step()
            except Exception as exc:  # noqa: BLE001 - one bad batch fails its requests, never the server
                for job in [*joining, *self._rows]:
                    if not job.done.done():
                        job.done.set_exception(exc)
                self._rows, self._cache, self._mask = [], None, None
            if self.on_step is not None:
                with self._lock:
                    waiting = [j.adapter for j in self._waiting]
                self.on_step([j.adapter for j in self._rows], waiting)

    def _drop_if_cancelled(self, job: Job) -> bool:
        if job.cancelled and not job.done.done():
            job.done.cancel()
        return job.cancelled

    def _load(self, name: str, path: Any) -> None:
        model = self.lm.model
        if isinstance(model, PeftModel):
            model.load_adapter(str(path), adapter_name=name)
        else:
            self.lm.model = PeftModel.from_pretrained(model, str(path), adapter_name=name)
        self.lm.model.eval()
        inference_weights(self.lm.model, self.lm.autocast_dtype)
        self._restack()
        with self._lock:
            self.adapters.add(name)
            self._openings.pop(name, None)

    def _unload(self, name: str) -> None:
        if any(j.adapter == name for j in self._rows):  # rows still using it: try again after the next step
            with self._lock:
                self._commands.append((lambda: self._unload(name), Future()))
            return
        model = self.lm.model
        if isinstance(model, PeftModel) and name in model.peft_config:
            if len(model.peft_config) == 1:
                self.lm.model = model.unload()  # the last adapter: back to the plain base model
            else:
                model.delete_adapter(name)
        self._openings.pop(name, None)
        self._restack()

    def _restack(self) -> None:
        model = self.lm.model
        if not isinstance(model, PeftModel):
            self._multi = None
            return
        self._multi = MultiLora(model, self.lm.autocast_dtype or torch.float32)
        self._multi.rebuild(sorted(model.peft_config))

    def _forward(self, jobs: Sequence[Job], ids: torch.Tensor, mask: torch.Tensor, cache: DynamicCache,
                 positions: torch.Tensor) -> torch.Tensor:
        dev = self.lm.device
        rows = self._multi.rows([None if j.adapter == self.base_name else j.adapter for j in jobs]) \
            if self._multi is not None else contextlib.nullcontext()
        with rows:
            out = self.lm.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=positions.to(dev),
                                past_key_values=cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].float()

    def _opening_cache(self, adapter: str) -> _Opening | None:
        opening = self._openings.get(adapter)
        if opening is None or not opening.tokens:
            return None
        if opening.cache is None:
            cache = DynamicCache()
            ids = torch.tensor([opening.tokens])
            self._forward([Job(adapter, [], Sampling(1))], ids, torch.ones_like(ids), cache,
                          torch.arange(len(opening.tokens))[None])
            opening.cache = cache
        return opening

    def _admit(self, jobs: list[Job]) -> None:
        groups: dict[tuple[str, bool], list[Job]] = {}
        for job in jobs:
            opening = self._openings.get(job.adapter)
            shared = bool(opening and opening.tokens and len(job.prompt) > len(opening.tokens)
                          and job.prompt[: len(opening.tokens)] == opening.tokens)
            groups.setdefault((job.adapter, shared), []).append(job)
        for (adapter, shared), group in groups.items():
            opening = self._opening_cache(adapter) if shared else None
            start = len(opening.tokens) if opening else 0
            own = [j.prompt[start:] for j in group]
            width = max(len(o) for o in own)
            ids = torch.full((len(group), width), self.lm.tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(group), start + width), dtype=torch.long)
            mask[:, :start] = 1
            for r, o in enumerate(own):
                ids[r, width - len(o):] = torch.tensor(o)
                mask[r, start + width - len(o):] = 1
            cache = repeat_cache(opening.cache, len(group)) if opening else DynamicCache()
            positions = (mask.cumsum(1) - 1).clamp(min=0)[:, start:]
            logits = self._forward(group, ids, mask, cache, positions)
            self._merge(group, cache, mask)
            self._choose(group, logits)

    def _merge(self, jobs: list[Job], cache: DynamicCache, mask: torch.Tensor) -> None:
        if self._cache is None:
            self._rows, self._cache, self._mask = list(jobs), cache, mask
            return
        width = max(self._mask.shape[1], mask.shape[1])
        merged = DynamicCache()
        for i, (old, new) in enumerate(zip(self._cache.layers, cache.layers)):
            merged.update(torch.cat([_pad_left(old.keys, width), _pad_left(new.keys, width)]),
                          torch.cat([_pad_left(old.values, width), _pad_left(new.values, width)]), i)
        self._mask = torch.cat([_pad_left(self._mask, width, dim=1), _pad_left(mask, width, dim=1)])
        self._rows, self._cache = self._rows + list(jobs), merged

    def _step(self) -> None:
        last = torch.tensor([[j.generated[-1]] for j in self._rows])
        positions = self._mask.sum(1, keepdim=True)
        self._mask = torch.cat([self._mask, torch.ones((len(self._rows), 1), dtype=torch.long)], dim=1)
        logits = self._forward(self._rows, last, self._mask, self._cache, positions)
        self._choose(self._rows, logits)

    def _choose(self, jobs: list[Job], logits: torch.Tensor) -> None:
        """Pick each row's next token, finish the rows that are done, and drop them from the batch."""
        tok = self.lm.tokenizer
        now = time.perf_counter()
        finished: set[int] = set()
        for r, job in enumerate(jobs):
            if job.cancelled:
                finished.add(id(job))
                self._drop_if_cancelled(job)
                continue
            token, reason = self._next(job, logits[r])
            if job.first_token is None:
                job.first_token = now
            if reason is None or reason == "length":
                if token != tok.eos_token_id:
                    job.generated.append(token)
            reason = reason or self._text(job, final=False)
            if reason is not None:
                finished.add(id(job))
                self._finish(job, reason)
        if finished:
            keep = [r for r, j in enumerate(self._rows) if id(j) not in finished]
            self._rows = [self._rows[r] for r in keep]
            if not self._rows:
                self._cache, self._mask = None, None
                return
            index = torch.tensor(keep)
            self._mask = self._mask[index]
            start = int((self._mask.sum(0) > 0).nonzero()[0])  # columns every row masks go
            self._mask = self._mask[:, start:]
            for layer in self._cache.layers:
                layer.keys, layer.values = layer.keys[index, :, start:], layer.values[index, :, start:]

    def _next(self, job: Job, logits: torch.Tensor) -> tuple[int, str | None]:
        """The row's next token and, when it ends the answer, why."""
        s, tok = job.sampling, self.lm.tokenizer
        if job.trie is not None:  # greedy within the labels, the probability renormalised over them
            allowed = job.trie.children.get(tuple(job.generated), [job.trie.end])
            within = torch.log_softmax(logits[allowed], dim=-1)
            k = int(within.argmax())
            token = allowed[k]
            job.label_logprob += float(within[k])
        elif s.temperature <= 0:
            token = int(logits.argmax())
        else:
            probs = torch.softmax(logits / s.temperature, dim=-1)
            if s.top_p < 1.0:
                sorted_p, order = probs.sort(descending=True)
                outside = sorted_p.cumsum(0) - sorted_p > s.top_p
                sorted_p[outside] = 0.0
                probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
            if job.generator is None:
                job.generator = torch.Generator().manual_seed(s.seed if s.seed is not None else
                                                              int(torch.randint(0, 2**62, (1,))))
            token = int(torch.multinomial(probs, 1, generator=job.generator))
        if s.logprobs is not None and token != tok.eos_token_id:  # only when asked: a softmax over the vocabulary
            logp = torch.log_softmax(logits, dim=-1)
            top = logp.topk(s.logprobs) if s.logprobs else None
            alts = [] if top is None else [(tok.decode([int(i)]), float(v)) for v, i in zip(top.values, top.indices)]
            job.logprobs.append((tok.decode([token]), float(logp[token]), alts))
        if token == tok.eos_token_id or (job.trie is not None and token == job.trie.end):
            return token, "stop"
        if job.trie is None and len(job.generated) + 1 >= s.max_tokens:  # a label always completes
            return token, "length"
        return token, None

    def _text(self, job: Job, final: bool) -> str | None:
        """Stream the new part of the answer; returns ``stop`` when a stop string appeared."""
        text = self.lm.tokenizer.decode(job.generated, skip_special_tokens=True).lstrip()
        reason = None
        for stop in job.sampling.stop:
            at = text.find(stop)
            if at >= 0:
                text, reason, final = text[:at], "stop", True
        if not final:  # hold back a broken character, or what may be the start of a stop string
            text = text.rstrip("\ufffd")
            for stop in job.sampling.stop:
                for n in range(min(len(stop) - 1, len(text)), 0, -1):
                    if text.endswith(stop[:n]):
                        text = text[:-n]
                        break
        if len(text) > len(job.sent) and text.startswith(job.sent):
            if job.on_text is not None:
                job.on_text(text[len(job.sent):])
            job.sent = text
        return reason

    def _finish(self, job: Job, reason: str) -> None:
        self._text(job, final=True)
        text = job.sent.rstrip()
        label = probability = None
        if job.trie is not None:
            label = job.trie.labels.get(tuple(job.generated) + (job.trie.end,), "")
            probability = float(torch.tensor(job.label_logprob).exp())
            text = label
        now = time.perf_counter()
        job.done.set_result(Completion(
            text=text, finish_reason=reason, prompt_tokens=len(job.prompt), completion_tokens=len(job.generated),
            label=label, probability=probability, logprobs=job.logprobs if job.sampling.logprobs is not None else None,
            seconds=now - job.submitted, first_token_seconds=(job.first_token or now) - job.submitted))


def _pad_left(t: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([torch.zeros(shape, dtype=t.dtype, device=t.device), t], dim=dim)
