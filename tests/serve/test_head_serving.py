"""A classification-head run served: one forward pass per request, the run's own predictions."""

import json

import httpx
import pytest

from tests.run_helpers import make_tiny_project, run_tiny
from tests.serve.conftest import KEY, ServeProcess


def test_a_head_run_answers_as_its_evaluation_did(tiny_model_dir, tmp_path):
    project = make_tiny_project(tmp_path / "p", tiny_model_dir)
    run = run_tiny(project, "model.precision=fp32", "adapter.head=classify")
    rows = [json.loads(line) for line in (run.predictions / "tuned.jsonl").read_text().splitlines()]
    proc = ServeProcess(tmp_path / "p", "--run", run.id)
    try:
        client = proc.client()
        for row in rows:
            reply = client.chat.completions.create(model=run.id, messages=[{"role": "user", "content": row["input"]}])
            ext = reply.model_extra["tunesmith"]
            assert reply.choices[0].message.content == row["prediction"] == ext["label"]
            assert ext["probability"] == pytest.approx(row["confidence"], rel=1e-4)
            assert sum(ext["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        chunks = list(client.chat.completions.create(model=run.id, stream=True,
                                                     messages=[{"role": "user", "content": rows[0]["input"]}]))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == rows[0]["prediction"]
        r = httpx.post(proc.url + "/completions", json={"model": run.id, "prompt": "x"},
                       headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    finally:
        proc.stop()
