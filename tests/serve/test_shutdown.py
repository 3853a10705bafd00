"""A killed server loses no answered request from its log; a stopped one finishes what is in flight."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time

import openai

from tests.serve.conftest import ServeProcess


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
