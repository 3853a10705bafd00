"""``tunesmith serve --run production`` follows the alias: promote and rollback switch runs without a restart
or a failed request."""

from __future__ import annotations

import json
import threading
import time

from tests.serve.conftest import ServeProcess
from tunesmith.runs.aliases import promote, rollback


def _first_prediction(run) -> tuple[str, str]:
    row = json.loads((run.predictions / "tuned.jsonl").read_text().splitlines()[0])
    return row["input"], row["prediction"]


def _wait_for(client, run_id: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if next(m for m in client.models.list().data if m.id == "production").tunesmith["run_id"] == run_id:
            return
        time.sleep(0.2)
    raise AssertionError(f"production did not move to {run_id}")


def test_the_server_follows_production_through_promote_and_rollback(tiny_runs):
    folder, a, b = tiny_runs
    runs = folder / "runs"
    promote(runs, a, reason="first")
    (folder / "follow.yaml").write_text((folder / "tunesmith.yaml").read_text() + "serve: {follow_seconds: 0.3}\n")
    proc = ServeProcess(folder, "-c", "follow.yaml", "--run", "production")
    try:
        client = proc.client()
        listed = {m.id: m.tunesmith for m in client.models.list().data}
        assert listed["production"]["run_id"] == a.id and listed["production"]["alias"] == "production"
        known = {a.id: _first_prediction(a), b.id: _first_prediction(b)}  # a test prompt of each, and its answer
        answered: list[tuple[str, str, str]] = []
        errors: list[Exception] = []
        stop = threading.Event()

        def traffic() -> None:  # requests keep arriving while the alias moves
            i = 0
            while not stop.is_set():
                text = known[(a.id, b.id)[i % 2]][0]
                i += 1
                try:
                    r = client.chat.completions.create(model="production", messages=[{"role": "user", "content": text}],
                                                       max_tokens=4)
                    answered.append((r.tunesmith["run_id"], text, r.choices[0].message.content))
                except Exception as exc:  # noqa: BLE001 - collected and asserted below
                    errors.append(exc)

        threads = [threading.Thread(target=traffic) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        promote(runs, b, reason="retrained")
        _wait_for(client, b.id)
        time.sleep(1.0)
        rollback(runs, reason="back")
        _wait_for(client, a.id)
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(60)
        assert errors == []
        served_by = [run_id for run_id, _, _ in answered]
        assert served_by[0] == a.id and b.id in served_by and served_by[-1] == a.id
        # Each run answered its own test prompt exactly as its evaluation did.
        checked = [(run_id, answer) for run_id, text, answer in answered if text == known[run_id][0]]
        assert {run_id for run_id, _ in checked} == {a.id, b.id}
        assert all(answer == known[run_id][1] for run_id, answer in checked)
    finally:
        assert proc.stop() == 0
