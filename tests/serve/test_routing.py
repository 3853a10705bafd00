"""Shadow and canary: a second run answers a copy (logged beside the real answer) or a share of the first run's
requests; ``tunesmith monitor`` pairs the shadow's answers with the run's."""

from __future__ import annotations

import json

from tests.serve.conftest import ServeProcess
from tunesmith.config import DedupConfig, MonitorConfig
from tunesmith.monitor.requestlog import read_log
from tunesmith.monitor.signals import monitor_traffic


def test_shadow_and_canary_are_logged_and_paired(tiny_runs):
    folder, a, b = tiny_runs
    rows = [json.loads(line) for line in (b.predictions / "tuned.jsonl").read_text().splitlines()]
    b_answers = {r["input"]: r["prediction"] for r in rows}
    proc = ServeProcess(folder, "--run", a.id, "--shadow", b.id, "--canary", f"{b.id}:0.5")
    try:
        client = proc.client()
        answered_by = []
        for i in range(24):
            text = rows[i % len(rows)]["input"]
            r = client.chat.completions.create(model=a.id, messages=[{"role": "user", "content": text}], max_tokens=4)
            answered_by.append((r.id, r.tunesmith["run_id"], r.tunesmith.get("route")))
            if i % 3 == 0:
                client.post("/feedback", cast_to=object, body={"response_id": r.id, "correction": rows[i % len(rows)]["label"]})
        # Requests to another model are neither split nor copied.
        other = client.chat.completions.create(model=b.id, messages=[{"role": "user", "content": "x"}], max_tokens=2)
        assert other.tunesmith["run_id"] == b.id and "route" not in other.tunesmith
    finally:
        assert proc.stop() == 0
    canary = [rid for rid, run, route in answered_by if route == "canary"]
    assert all(run == b.id for rid, run, route in answered_by if route == "canary")
    assert all(run == a.id for rid, run, route in answered_by if route is None)
    assert 3 <= len(canary) <= 21  # half, drawn at random
    log = read_log(folder / "logs" / "requests.sqlite")
    primary = {r["id"]: r for r in log if r["model"] == a.id}
    assert set(primary) >= {rid for rid, _, _ in answered_by}
    assert all(primary[rid]["metadata"].get("tunesmith_route") == "canary" for rid in canary)
    shadows = [r for r in log if r["metadata"].get("shadow_of") in {rid for rid, _, _ in answered_by}]
    assert len(shadows) == 24 and all(r["model"] == b.id and r["run_id"] == b.id for r in shadows)
    for r in shadows:  # the shadow answers as run b answers
        assert r["answer"] == b_answers[r["messages"][-1]["content"]]
    report = monitor_traffic(a, log, MonitorConfig(min_requests=5), DedupConfig(near=False))
    shadow = report.signal("shadow_agreement")
    assert shadow is not None and shadow.count == 24 - len(canary)
    assert shadow.detail["corrected"] >= 1 and "shadow matched the correction" in shadow.message
    assert report.signal("canary").count == len(canary)
