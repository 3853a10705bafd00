"""``tunesmith monitor`` on a tiny run's request log: quiet on traffic like the training data, alerts (exit code 3,
webhook, report) on traffic unlike it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.run_helpers import make_tiny_project, run_tiny
from tunesmith.data.prepare import Splits
from tunesmith.monitor.requestlog import Feedback, LoggedRequest, RequestLog
from tunesmith.monitor.schema import read_monitor_report
from tunesmith.runs.aliases import promote


class Receiver:
    """A loopback webhook endpoint that records what it is sent."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.posts.append((json.loads(body), self.headers.get("Authorization", "")))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def served_run(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("monitored")
    project = make_tiny_project(folder, tiny_model_dir)
    run = run_tiny(project, "model.precision=fp32")
    promote(folder / "runs", run)
    return folder, run


def write_log(path, rows, run_id=None) -> None:
    log = RequestLog(path)
    for i, (text, label, probability) in enumerate(rows):
        log.record(LoggedRequest(id=f"chatcmpl-{i}", endpoint="chat.completions", model="production",
                                 run_id=run_id, messages=[{"role": "user", "content": text}], answer=label or "",
                                 prompt_tokens=10, completion_tokens=2, latency_ms=5, first_token_ms=3,
                                 finish_reason="stop", label=label, probability=probability)).result()
    log.close()


def monitor(folder, *args, env=None):
    return subprocess.run([sys.executable, "-m", "tunesmith", "monitor", "--json", *args], cwd=folder,
                          capture_output=True, text=True, timeout=300, env=env)


def test_quiet_on_training_like_traffic_and_alerting_on_drift(served_run, tmp_path):
    folder, run = served_run
    splits = Splits.load(run.data)
    # Traffic like the training data: its own inputs, answered with its labels.
    quiet = tmp_path / "quiet.sqlite"
    write_log(quiet, [(ex.prompt, ex.label, 0.9) for ex in splits.train] * 2, run.id)
    res = monitor(folder, "--log", str(quiet), "--out", str(tmp_path / "q"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout)["alerts"] == []

    # Drifted: long messages about something else, all answered with one label, less confident.
    hook = Receiver()
    (folder / "hooked.yaml").write_text((folder / "tunesmith.yaml").read_text()
                                        + f"monitor: {{webhook: '{hook.url}', window: 1h}}\n")
    drifted = tmp_path / "drifted.sqlite"
    long = "I would like to know how to order a brand new cheque book for my small business account, please advise"
    write_log(drifted, [(f"{long} ({i})", "card_arrival", 0.4) for i in range(60)], run.id)
    log = RequestLog(drifted)
    log.feedback(Feedback("chatcmpl-3", rating=1, correction="pin_blocked")).result()
    log.close()
    env = {**__import__("os").environ, "TUNESMITH_WEBHOOK_TOKEN": "hook-secret"}
    res = monitor(folder, "-c", "hooked.yaml", "--log", str(drifted), "--out", str(tmp_path / "d"), env=env)
    assert res.returncode == 3, res.stdout + res.stderr
    out = json.loads(res.stdout)
    alerting = {s["name"] for s in out["signals"] if s["status"] == "alert"}
    assert {"input_length", "input_domain", "label_shift"} <= alerting
    assert out["signals"][0]["status"] == "alert"  # alerts first
    assert out["webhook"] == "sent (HTTP 200)"
    body, auth = hook.posts[0]
    assert auth == "Bearer hook-secret" and len(body["alerts"]) == len(out["alerts"]) and body["alias"] == "production"
    report = read_monitor_report(tmp_path / "d" / "report.json")
    assert report.requests == 60 and report.examples[0].kind == "unlike training"
    md = (tmp_path / "d" / "report.md").read_text()
    assert md.index("alert(s)") < md.index("## Signals")
    assert "data:image/png;base64" in (tmp_path / "d" / "report.html").read_text()


def test_too_little_traffic_does_not_alert(served_run, tmp_path):
    folder, _ = served_run
    few = tmp_path / "few.sqlite"
    write_log(few, [("something completely different and rather long for this model", "card_arrival", 0.4)] * 5)
    res = monitor(folder, "--log", str(few), "--out", str(tmp_path / "f"))
    assert res.returncode == 0, res.stdout + res.stderr
    statuses = {s["status"] for s in json.loads(res.stdout)["signals"]}
    assert "alert" not in statuses
