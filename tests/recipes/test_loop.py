"""The loop after deployment, end to end on a tiny model, as a user runs it.

Train v1 on two intents, promote it, serve it by alias, send traffic that drifts (a third intent in
longer messages) with corrections, see ``tunesmith monitor`` alert, export the log, review it with a
scripted reviewer, ``tunesmith retrain``: the candidate is promoted because it is significantly
better on the fresh test set and not worse on the frozen one, and the running server switches to
it. Then a candidate trained on shuffled labels is refused by the gate.
"""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TEXTS
from tests.serve.conftest import ServeProcess
from tunesmith.config import load_config
from tunesmith.recipes.finetune import run_pipeline
from tunesmith.runs.aliases import alias_holder, promote

OPENINGS = ["Hello there, I am travelling next week and I have a question.", "Good morning team, quick one for you.",
            "Hi, sorry to bother you again but I really need to know this before my trip.",
            "Dear support, I was reading your app and could not find the answer anywhere."]
CLOSINGS = ["Thanks a lot in advance for your help!", "Cheers, and have a nice day.", "Please answer soon, thank you.",
            "Many thanks."]


def drifted_traffic(seed: int = 0) -> list[tuple[str, str]]:
    """(message, true intent): three quarters exchange_rate (never trained in v1), all in long messages."""
    rng = random.Random(seed)
    out = []
    for i in range(64):
        label = "exchange_rate" if i % 4 else rng.choice(["card_arrival", "pin_blocked"])
        text = f"{OPENINGS[i % 4]} {TEXTS[label][i % 6]} {CLOSINGS[(i // 4) % 4]}"
        out.append((text, label))
    return out


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tunesmith", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("loop")
    with (root / "train.jsonl").open("w") as fh:
        for c in range(25):
            for label in ("card_arrival", "pin_blocked"):
                for t in TEXTS[label]:
                    fh.write(json.dumps({"text": t if c == 0 else f"{t} ({c})", "label": label}) + "\n")
    (root / "tunesmith.yaml").write_text(
        "objective: {task: classification}\n"
        "data: {train: train.jsonl, dedup: {near: false}, balance: {strategy: oversample}}\n"
        f"model: {{base: '{tiny_model_dir}', max_seq_len: 256, precision: fp32}}\n"
        "adapter: {r: 8, alpha: 16}\n"
        "train: {epochs: 10, batch_size: 8, lr: 0.02, logging_steps: 5}\n"
        "eval: {max_new_tokens: 4, batch_size: 16, forgetting: {enabled: false}}\n"
        "serve: {follow_seconds: 0.3}\n"
        "monitor: {min_requests: 20}\n"
        "retrain: {new_data: [reviewed.jsonl], fresh_test_fraction: 0.4, gate: {margin: 0.15}}\n")
    return root


def test_the_loop_end_to_end(project, monkeypatch):
    monkeypatch.chdir(project)
    cfg, base = load_config(project / "tunesmith.yaml")
    v1 = run_pipeline(cfg, base)
    runs = project / "runs"
    promote(runs, v1, reason="first release")

    # Serve by alias; drifted traffic; users correct some answers.
    server = ServeProcess(project, "--run", "production")
    try:
        client = server.client()
        traffic = drifted_traffic()
        truth = {}
        for i, (text, label) in enumerate(traffic):
            reply = client.chat.completions.create(model="production", messages=[{"role": "user", "content": text}])
            truth[text] = label
            if reply.choices[0].message.content != label and i % 2:
                client.post("/feedback", cast_to=object, body={"response_id": reply.id, "rating": "down",
                                                               "correction": label})
        # The monitor alerts: inputs unlike training, longer, corrections.
        res = _cli(project, "monitor", "--json")
        assert res.returncode == 3, res.stderr
        report = json.loads(res.stdout)
        status = {s["name"]: s["status"] for s in report["signals"]}
        assert status["input_length"] == "alert" and status["input_domain"] == "alert", report["signals"]
        assert report["requests"] == len(traffic) and report["alias"] == "production"
        assert Path(report["files"]["html"]).read_text().count("data:image/png;base64") == 1  # self-contained plot
        estimate = next(s for s in report["signals"] if s["name"] == "estimated_accuracy")
        assert estimate["status"] in ("ok", "alert") and estimate["count"] == len(traffic)

        # Export the log, review it with a scripted reviewer (approve, fix the answer to the true intent).
        assert _cli(project, "logs", "export", "--out", "reviewed.jsonl").returncode == 0
        assert _cli(project, "data", "review", "export", "reviewed.jsonl", "--out", "sheet.csv").returncode == 0
        with (project / "sheet.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        for row in rows:
            messages = json.loads(row["messages"])
            messages[-1]["content"] = truth[messages[0]["content"]]
            row["messages"], row["decision"] = json.dumps(messages), "approve"
        with (project / "sheet.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        res = _cli(project, "data", "review", "import", "sheet.csv", "--into", "reviewed.jsonl")
        assert res.returncode == 0, res.stderr

        # A dry run: the plan and its cost, no run.
        before = sorted(p.name for p in runs.iterdir())
        res = _cli(project, "retrain", "--dry-run", "--json")
        assert res.returncode == 0, res.stderr
        plan = json.loads(res.stdout)
        assert plan["production"] == v1.id and plan["changes"]["rows_read"] == len(traffic)
        assert plan["estimate"]["data"]["total_steps"] > 0 and sorted(p.name for p in runs.iterdir()) == before

        # Retrain: promoted, and the running server follows.
        res = _cli(project, "retrain", "--json")
        assert res.returncode == 0, res.stderr
        outcome = json.loads(res.stdout)
        sets = {c["name"]: c for c in outcome["comparisons"]}
        assert outcome["promoted"] is True, outcome["checks"]
        assert sets["fresh"]["candidate"] > sets["fresh"]["production"] and sets["fresh"]["difference_interval"][0] > 0
        assert sets["frozen"]["difference_interval"][0] > -0.15
        assert outcome["changes"]["new_labels"] == ["exchange_rate"]
        changes = outcome["changes"]
        assert changes["rows_read"] == len(traffic) == (changes["set_aside_on_reading"] + changes["held_out_as_fresh_test"]
                                                        + changes["joined_training"] + sum(changes["set_aside"].values()))
        candidate = outcome["candidate"]
        assert alias_holder(runs, "production") == candidate and alias_holder(runs, "candidate") == candidate
        assert json.loads((runs / candidate / "lineage.json").read_text())["parent"] == v1.id
        deadline = time.time() + 60
        while next(m for m in client.models.list().data if m.id == "production").tunesmith["run_id"] != candidate:
            assert time.time() < deadline, "the server did not follow production"
            time.sleep(0.2)
        text = next(t for t, label in traffic if label == "exchange_rate")
        reply = client.chat.completions.create(model="production", messages=[{"role": "user", "content": text}])
        assert reply.tunesmith["run_id"] == candidate
    finally:
        assert server.stop() == 0

    # A candidate trained on shuffled labels is refused, with the reason.
    rng = random.Random(1)
    shuffled = []
    for line in (project / "reviewed.jsonl").read_text().splitlines():
        row = json.loads(line)
        row["messages"][-1]["content"] = rng.choice(["card_arrival", "pin_blocked", "exchange_rate"])
        shuffled.append(json.dumps(row))
    (project / "shuffled.jsonl").write_text("\n".join(shuffled) + "\n")
    (project / "worse.yaml").write_text((project / "tunesmith.yaml").read_text().replace(
        "new_data: [reviewed.jsonl]", "new_data: [shuffled.jsonl]"))
    res = _cli(project, "retrain", "-c", "worse.yaml", "--json")
    assert res.returncode == 0, res.stderr
    refused = json.loads(res.stdout)
    assert refused["promoted"] is False and refused["reasons"]
    assert alias_holder(runs, "production") == candidate  # production unchanged
    assert alias_holder(runs, "candidate") == refused["candidate"]
    assert "Not promoted" in (runs / refused["candidate"] / "retrain.md").read_text()
