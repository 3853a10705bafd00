"""The server's Prometheus metrics (``GET /metrics``), each by served model."""

from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: Latency buckets in seconds: a label answer on 2 CPU cores takes tenths of a second, a long generation tens.
LATENCY = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)


class ServerMetrics:
    """Requests, errors, tokens, latency, time to first token, batch rows and queue depth."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tunesmith_requests", "Requests answered, by model, endpoint and HTTP status",
                                ["model", "endpoint", "status"], registry=r)
        self.errors = Counter("tunesmith_request_errors", "Requests refused or failed, by model and error code",
                              ["model", "code"], registry=r)
        self.prompt_tokens = Counter("tunesmith_prompt_tokens", "Prompt tokens of answered requests", ["model"], registry=r)
        self.generated_tokens = Counter("tunesmith_generated_tokens", "Tokens generated", ["model"], registry=r)
        self.latency = Histogram("tunesmith_request_latency_seconds", "From arrival to the last token", ["model"],
                                 buckets=LATENCY, registry=r)
        self.first_token = Histogram("tunesmith_time_to_first_token_seconds", "From arrival to the first token",
                                     ["model"], buckets=LATENCY, registry=r)
        self.batch_rows = Gauge("tunesmith_batch_rows", "Rows in the running batch, by model", ["model"], registry=r)
        self.queue_depth = Gauge("tunesmith_queue_depth", "Requests waiting to join the batch, by model", ["model"],
                                 registry=r)
        self.batch_size = Histogram("tunesmith_batch_size", "Rows per decode step", buckets=(1, 2, 4, 8, 16, 32, 64, 128),
                                    registry=r)

    def step(self, running: list[str], waiting: list[str], known: list[str]) -> None:
        """After a decode step: rows and waiting requests by model (``known``: every served name, to show zeros)."""
        rows, queued = Tally(running), Tally(waiting)
        for name in {*known, *rows, *queued}:
            self.batch_rows.labels(name).set(rows.get(name, 0))
            self.queue_depth.labels(name).set(queued.get(name, 0))
        if running:
            self.batch_size.observe(len(running))

    def text(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
