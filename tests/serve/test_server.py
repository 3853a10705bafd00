"""``tunesmith serve`` as clients meet it: a real server on loopback, driven by the official openai client."""

from __future__ import annotations

import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from typer.testing import CliRunner

from tests.serve.conftest import ADMIN, KEY
from tunesmith.cli import app

runner = CliRunner()


def predictions(run):
    return [json.loads(line) for line in (run.predictions / "tuned.jsonl").read_text().splitlines()]


def ask(client, model, text, **kw):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **kw)


def test_each_runs_answers_equal_its_evaluation_with_both_adapters_in_one_batch(server, tiny_runs):
    _, a, b = tiny_runs
    client = server.client()
    jobs = [(run, row) for row in predictions(a) for run in (a, b)] + [(b, row) for row in predictions(b)]
    with ThreadPoolExecutor(16) as pool:  # concurrent: rows of both adapters share the running batch
        replies = list(pool.map(lambda job: ask(client, job[0].id, job[1]["input"], temperature=0), jobs))
    for (run, row), reply in zip(jobs, replies):
        if row in predictions(run):
            assert reply.choices[0].message.content == row["prediction"]  # the label evaluation decoded
            ext = reply.model_extra["tunesmith"]
            assert ext["label"] == row["prediction"] and ext["probability"] == pytest.approx(row["confidence"], rel=1e-4)
    # a free answer (outside the label set) equals evaluation's free output too
    row = predictions(a)[0]
    free = ask(client, a.id, row["input"], max_tokens=4, extra_body={"tunesmith": {"constrained": False}})
    assert free.choices[0].message.content == row["output"]


def test_streamed_chat_and_completions_and_usage(server, tiny_runs):
    _, a, _ = tiny_runs
    client = server.client()
    base = server.info["models"][0]
    plain = ask(client, base, "where is my card", max_tokens=12)
    assert plain.usage.completion_tokens <= 12 and plain.choices[0].finish_reason in ("stop", "length")
    chunks = list(ask(client, base, "where is my card", max_tokens=12, stream=True,
                      stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == plain.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == plain.choices[0].finish_reason
    # a label answer streams as the whole label
    label = [c.choices[0].delta.content for c in ask(client, a.id, "My PIN is blocked.", stream=True) if c.choices]
    assert "".join(x or "" for x in label) == ask(client, a.id, "My PIN is blocked.").choices[0].message.content
    lp = ask(client, base, "where is my card", max_tokens=6, logprobs=True, top_logprobs=2)
    content = lp.choices[0].logprobs.content
    assert len(content) == lp.usage.completion_tokens and all(len(t.top_logprobs) == 2 for t in content)
    assert all(t.logprob == pytest.approx(t.top_logprobs[0].logprob) and t.logprob <= 0 for t in content)  # greedy
    assert "".join(t.token for t in content).strip() == lp.choices[0].message.content
    comp = client.completions.create(model=base, prompt="The card", max_tokens=5, logprobs=2)
    assert comp.usage.completion_tokens == 5 and len(comp.choices[0].logprobs.tokens) == 5
    streamed = "".join(c.choices[0].text for c in client.completions.create(model=base, prompt="The card", max_tokens=5,
                                                                            stream=True) if c.choices)
    assert streamed.strip() == comp.choices[0].text


def test_models_say_what_each_run_measured(server, tiny_runs):
    _, a, _ = tiny_runs
    models = {m.id: m.model_extra.get("tunesmith", {}) for m in server.client().models.list()}
    assert a.id in models and len(models) == 3
    report = json.loads(a.report_json.read_text())
    info = models[a.id]
    assert info["run_id"] == a.id and info["task"] == "classification" and info["verdict"] == report["verdict"]
    assert info["data_hash"] == report["data"]["data_hash"] and info["metric"] == "accuracy"
    assert info["interval"] == [report["interval"]["low"], report["interval"]["high"]]


def test_keys_are_required(server):
    with pytest.raises(openai.AuthenticationError):
        server.client(key="wrong").models.list()
    r = httpx.get(server.url + "/models")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = httpx.post(server.url + "/adapters", json={"name": "x", "path": "/nowhere"}, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 401 and "admin key" in r.json()["error"]["message"]
    assert httpx.get(server.url.removesuffix("/v1") + "/health").json()["status"] == "ok"


@pytest.mark.parametrize("body, status, param", [
    ({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}, 404, "model"),
    ({"messages": [{"role": "user", "content": "hi"}]}, 400, "model"),
    ({"model": "M", "messages": []}, 400, "messages"),
    ({"model": "M", "messages": [{"role": "robot", "content": "hi"}]}, 400, "messages.0.role"),
    ({"model": "M", "messages": [{"role": "assistant", "content": "hi"}]}, 400, "messages"),
    ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "temperature": 3}, 400, "temperature"),
    ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}, 400, "max_tokens"),
    ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "n": 2}, 400, "n"),
    ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "tools": []}, 400, "tools"),
    ({"model": "M", "messages": [{"role": "user", "content": "hi " * 5000}]}, 400, "messages"),
    ({"model": "M", "prompt": ["a", "b"]}, 400, "prompt"),
])
def test_bad_requests_get_a_4xx_naming_the_field(server, body, status, param):
    body = {k: (server.info["models"][0] if v == "M" else v) for k, v in body.items()}
    path = "/completions" if "prompt" in body else "/chat/completions"
    r = httpx.post(server.url + path, json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["message"] and err["type"]


def test_malformed_and_oversized_bodies(server):
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    r = httpx.post(server.url + "/chat/completions", content=b"{not json", headers=auth)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = httpx.post(server.url + "/chat/completions", content=b"x" * 2_000_000, headers=auth)
    assert r.status_code == 413
    r = httpx.post(server.url + "/feedback", json={"response_id": "chatcmpl-nothing", "rating": "up"}, headers=auth)
    assert r.status_code == 404 and r.json()["error"]["param"] == "response_id"
    assert httpx.get(server.url.removesuffix("/v1") + "/health").status_code == 200  # none of it hurt the server


def test_feedback_goes_into_logs_export(server, tiny_runs):
    folder, a, _ = tiny_runs
    client = server.client()
    reply = ask(client, a.id, "my e-mail is jane.doe@example.com, where is my card?", user="u-7",
                metadata={"ticket": "T-1"})
    other = ask(client, a.id, "rate for dollars")
    auth = {"Authorization": f"Bearer {KEY}"}
    r = httpx.post(server.url + "/feedback", json={"response_id": reply.id, "rating": "down", "comment": "wrong",
                                                   "correction": "card_arrival"}, headers=auth)
    assert r.status_code == 200, r.text
    out = folder / "traffic.jsonl"
    res = runner.invoke(app, ["logs", "export", "--log", str(folder / "logs" / "requests.sqlite"), "--out", str(out),
                              "--json"])
    assert res.exit_code == 0, res.output
    rows = {json.loads(line)["provenance"]["response_id"]: json.loads(line) for line in out.read_text().splitlines()}
    mine = rows[reply.id]
    assert mine["needs_review"] is True and mine["messages"][-1] == {"role": "assistant", "content": "card_arrival"}
    assert "<EMAIL>" in mine["messages"][0]["content"] and "jane.doe" not in out.read_text()  # scrubbed before written
    assert mine["provenance"]["ratings"] == [1] and mine["provenance"]["corrected"] is True
    assert rows[other.id]["messages"][-1]["content"] == other.choices[0].message.content
    res = runner.invoke(app, ["logs", "export", "--log", str(folder / "logs" / "requests.sqlite"), "--out", str(out),
                              "--only-feedback", "--json"])
    exported = [json.loads(x)["provenance"] for x in out.read_text().splitlines()]
    assert json.loads(res.stdout)["rows"] >= 1 and all(p["ratings"] or p["corrected"] or p["comments"] for p in exported)
    # the data step reads it: the rows wait for review
    with sqlite3.connect(folder / "logs" / "requests.sqlite") as con:
        user, meta = con.execute("SELECT user, metadata FROM requests WHERE id = ?", (reply.id,)).fetchone()
    assert user == "u-7" and json.loads(meta) == {"ticket": "T-1"}


def test_adapters_are_added_and_removed_while_requests_run(server, tiny_runs):
    _, a, b = tiny_runs
    client, admin = server.client(), {"Authorization": f"Bearer {ADMIN}"}
    base = server.info["models"][0]
    with ThreadPoolExecutor(8) as pool:
        running = [pool.submit(ask, client, base, f"tell me about card {i}", max_tokens=60) for i in range(8)]
        r = httpx.post(server.url + "/adapters", json={"name": "second-a", "path": str(a.adapter)}, headers=admin, timeout=60)
        assert r.status_code == 200, r.text
        assert ask(client, "second-a", "My PIN is blocked.").choices[0].message.content == \
            ask(client, a.id, "My PIN is blocked.").choices[0].message.content
        r = httpx.delete(server.url + "/adapters/second-a", headers=admin)
        assert r.status_code == 200
        assert all(f.result(60).usage.completion_tokens > 0 for f in running)  # none failed
    with pytest.raises(openai.NotFoundError):
        ask(client, "second-a", "hi")
    r = httpx.post(server.url + "/adapters", json={"run": b.id}, headers=admin, timeout=60)
    assert r.status_code == 409  # already served under its run id


def test_metrics_count_requests_by_model(server, tiny_runs):
    _, a, _ = tiny_runs
    ask(server.client(), a.id, "hello")
    text = httpx.get(server.url.removesuffix("/v1") + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    assert f'tunesmith_requests_total{{endpoint="chat.completions",model="{a.id}",status="200"}}' in text
    for name in ("tunesmith_generated_tokens_total", "tunesmith_request_latency_seconds_bucket",
                 "tunesmith_time_to_first_token_seconds_bucket", "tunesmith_queue_depth", "tunesmith_batch_rows",
                 "tunesmith_request_errors_total"):
        assert name in text


def test_binding_beyond_loopback_without_a_key_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("TUNESMITH_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["serve", "--host", "0.0.0.0", "--no-auth"])
    assert res.exit_code == 2 and "loopback" in res.output
    res = runner.invoke(app, ["serve"])
    assert res.exit_code == 2 and "API key" in res.output


def test_adapters_load_from_safetensors_only(tmp_path):
    from tunesmith.errors import UserError
    from tunesmith.serve.served import served_adapter

    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (tmp_path / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(UserError, match="safetensors only"):
        served_adapter("x", tmp_path)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "use_dora": True}))
    with pytest.raises(UserError, match="DoRA"):
        served_adapter("x", tmp_path)
