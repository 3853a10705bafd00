"""A killed server loses no answered request from its log; a stopped one finishes what is in flight."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai

from tests.serve.conftest import KEY, ServeProcess


def test_sigkill_under_load_keeps_every_answer_a_client_received_in_the_log(tiny_runs, tmp_path):
    folder, a, _ = tiny_runs
    log = tmp_path / "requests.sqlite"
    (tmp_path / "tunesmith.yaml").write_text(f"project: {{runs_dir: '{folder / 'runs'}'}}\nserve: {{log: {{path: '{log}'}}}}\n")
    proc = ServeProcess(tmp_path, "--run", a.id)
    received, stop = [], threading.Event()

    def client_loop(i):
        client = proc.client(timeout=30)
        while not stop.is_set():
            try:
                kw = {"stream": True} if i % 2 else {}
                reply = client.chat.completions.create(model=a.id if i % 3 else proc.info["models"][0], max_tokens=8,
                                                       messages=[{"role": "user", "content": f"card question {i}"}], **kw)
                if kw:
                    ids = {chunk.id for chunk in reply}  # the whole stream, [DONE] included
                    received.append(ids.pop())
                else:
                    received.append(reply.id)
            except (openai.APIConnectionError, openai.APIError, Exception):  # noqa: BLE001 - the server is gone
                return

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    deadline = time.time() + 60
    while len(received) < 40 and time.time() < deadline:
        time.sleep(0.05)
    proc.stop(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(30)
    assert len(received) >= 40
    with sqlite3.connect(log) as con:
        logged = {row[0] for row in con.execute("SELECT id FROM requests")}
    assert set(received) <= logged


def test_sigterm_finishes_requests_in_flight(tiny_runs, tmp_path):
    folder, a, _ = tiny_runs
    (tmp_path / "tunesmith.yaml").write_text(f"project: {{runs_dir: '{folder / 'runs'}'}}\n")
    proc = ServeProcess(tmp_path, "--run", a.id)
    stream = proc.client(timeout=60).chat.completions.create(
        model=proc.info["models"][0], max_tokens=500, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "tell me a long story"}])
    chunks = [next(stream), next(stream)]  # the answer has started
    proc.proc.send_signal(signal.SIGTERM)
    chunks += list(stream)  # ... and goes on to its end
    assert chunks[-1].usage.completion_tokens == 500
    # it exits by itself once the answer is out; uvicorn re-raises the SIGTERM it caught, as a stopped process should
    assert proc.proc.wait(60) in (0, -signal.SIGTERM)
    proc.stop()
    with sqlite3.connect(tmp_path / "logs" / "requests.sqlite") as con:  # flushed before the process ended
        assert con.execute("SELECT completion_tokens FROM requests").fetchall() == [(500,)]


def test_a_full_queue_gets_429_and_a_client_that_leaves_frees_its_row(tiny_runs, tmp_path):
    folder, a, _ = tiny_runs
    (tmp_path / "tunesmith.yaml").write_text(
        f"project: {{runs_dir: '{folder / 'runs'}'}}\nserve: {{limits: {{max_batch: 1, max_queue: 1}}}}\n")
    proc = ServeProcess(tmp_path, "--run", a.id)
    base = proc.info["models"][0]
    health = proc.url.removesuffix("/v1") + "/health"
    try:
        client = proc.client(timeout=60)
        # a client reads the start of a long answer and goes away: its row is freed, not decoded to the end
        stream = client.chat.completions.create(model=base, max_tokens=500, stream=True,
                                                messages=[{"role": "user", "content": "a long story"}])
        next(stream), next(stream)
        stream.close()
        deadline = time.time() + 20
        while httpx.get(health).json()["running"] and time.time() < deadline:
            time.sleep(0.05)
        assert httpx.get(health).json()["running"] == 0
        metrics = httpx.get(proc.url.removesuffix("/v1") + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
        assert f'tunesmith_request_errors_total{{code="client_closed",model="{base}"}} 1.0' in metrics

        # one row decoding, one waiting: the rest are refused with 429 while they last
        def ask(_):
            try:
                return client.chat.completions.create(model=base, max_tokens=300,
                                                      messages=[{"role": "user", "content": "a long story"}]).id
            except openai.RateLimitError as exc:
                return exc.status_code

        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(ask, range(6)))
        assert 429 in results and any(isinstance(r, str) for r in results)
    finally:
        proc.stop()
