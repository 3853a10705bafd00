"""The loop after deployment on the embedded model and real banking77 messages, as a user runs it.

1. v1: `tunesmith run` on 8 intents (800 banking77 training messages), `tunesmith promote --as production`.
2. `tunesmith serve --run production`; traffic from banking77's test split drifts: two thirds of the
   messages are of 4 intents v1 never saw, half of all messages wrapped in a longer greeting; users
   correct a share of the wrong answers through /v1/feedback.
3. `tunesmith monitor`: the alerts, and the label-free accuracy estimate beside the true accuracy on
   the traffic (known here because banking77 is labelled).
4. `tunesmith logs export`, `tunesmith data review export`, a scripted reviewer who approves every row
   and fixes its answer to the true intent, `tunesmith data review import`.
5. `tunesmith retrain`: the candidate against production on the frozen test split and the fresh test
   set; the running server follows the promotion.
6. A candidate whose reviewed rows carry shuffled labels: refused by the gate.

Data: banking77 by PolyAI (Casanueva et al., 2020), CC BY 4.0, read from ../shared/data/banking77
(or --data). Prints one JSON document of what was measured; every figure comes from this run.

Usage: python examples/loop_banking77.py [--out DIR] [--data DIR] [--requests 240]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
V1 = ["cancel_transfer", "terminate_account", "card_arrival", "exchange_rate", "apple_pay_or_google_pay",
      "lost_or_stolen_phone", "age_limit", "pin_blocked"]
NEW = ["top_up_failed", "cash_withdrawal_charge", "lost_or_stolen_card", "transfer_not_received_by_recipient"]
OPENINGS = ["Hello, I hope you are well. I have been a customer for years and I need some help today.",
            "Hi there, sorry to bother you on a weekend, but something came up and I could not find it in the app.",
            "Good morning, I am writing from abroad and my question is probably simple but it matters to me."]
CLOSINGS = ["Thanks a lot in advance for your help, I really appreciate it.", "Please get back to me soon, thank you!",
            "Kind regards and have a nice day."]
KEY = "loop-example-key"


def read(data: Path, name: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with (data / name).open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            out.setdefault(row["category"], []).append(row["text"])
    return out


def tunesmith(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "tunesmith"
    res = subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, "TUNESMITH_API_KEY": KEY})
    if check and res.returncode != 0:
        raise SystemExit(f"tunesmith {' '.join(args)} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("loop-banking77"))
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "banking77")
    ap.add_argument("--requests", type=int, default=240)
    args = ap.parse_args()
    project, rng = args.out.resolve(), random.Random(0)
    project.mkdir(parents=True, exist_ok=True)
    train, test = read(args.data, "train.csv"), read(args.data, "test.csv")
    figures: dict = {"seconds": {}}
    clock = time.perf_counter

    # 1. v1 on 8 intents.
    with (project / "train.jsonl").open("w") as fh:
        for label in V1:
            for text in rng.sample(train[label], 100):
                fh.write(json.dumps({"text": text, "label": label}) + "\n")
    (project / "tunesmith.yaml").write_text(
        "# banking77 (PolyAI, CC BY 4.0): 8 intents for v1; traffic brings 4 more.\n"
        "project: {name: loop-banking77}\n"
        "objective: {task: classification, target: 0.8}\n"
        "data: {train: train.jsonl, balance: {strategy: oversample}}\n"
        "train: {epochs: 1}\n"
        "monitor: {window: 30s}\n"
        "retrain: {new_data: [reviewed.jsonl], fresh_test_fraction: 0.3, gate: {margin: 0.05}}\n")
    start = clock()
    v1 = json.loads(tunesmith(project, "run", "--json").stdout)
    figures["seconds"]["v1 run"] = round(clock() - start, 1)
    figures["v1"] = {"run": v1["run_id"], "accuracy": v1["tuned"]["accuracy"], "interval": v1["interval"]}
    tunesmith(project, "promote", v1["run_id"], "--as", "production", "--reason", "first release")

    # 2. Serve production; drifted traffic with corrections.
    server = subprocess.Popen([str(Path(sys.executable).parent / "tunesmith"), "serve", "--run", "production",
                               "--port", "0", "--json"], cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, "TUNESMITH_API_KEY": KEY})
    url = json.loads(server.stdout.readline())["url"]
    import openai

    client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=600)
    pool = [(t, lab) for lab in NEW for t in test[lab]] + [(t, lab) for lab in V1 for t in rng.sample(test[lab], 10)]
    rng.shuffle(pool)
    traffic = []
    for i, (text, label) in enumerate(pool[: args.requests]):
        wrapped = f"{OPENINGS[i % 3]} {text} {CLOSINGS[i % 3]}" if i % 2 else text
        traffic.append((wrapped, label))

    def ask(item: tuple[str, str]) -> tuple[str, str, str, float | None]:
        text, label = item
        r = client.chat.completions.create(model="production", messages=[{"role": "user", "content": text}])
        return r.id, label, r.choices[0].message.content, (r.tunesmith or {}).get("probability")

    start = clock()
    with ThreadPoolExecutor(16) as ex:
        answers = list(ex.map(ask, traffic))
    figures["seconds"]["traffic"] = round(clock() - start, 1)
    corrected = 0
    for i, (rid, label, answer, _) in enumerate(answers):
        if answer != label and i % 3 == 0:  # a third of the wrong answers get a thumbs down and the right intent
            client.post("/feedback", cast_to=object, body={"response_id": rid, "rating": "down", "correction": label})
            corrected += 1
    accuracy = sum(a == lab for _, lab, a, _ in answers) / len(answers)
    figures["traffic"] = {"requests": len(answers), "new_intents": sum(lab in NEW for _, lab in traffic),
                          "wrapped": sum(1 for i in range(len(traffic)) if i % 2), "corrected": corrected,
                          "true_accuracy_of_v1": round(accuracy, 4),
                          "true_accuracy_on_v1_intents": round(
                              sum(a == lab for _, lab, a, _ in answers if lab in V1) / sum(lab in V1 for _, lab, _, _ in answers), 4)}

    # 3. Monitor.
    start = clock()
    mon = tunesmith(project, "monitor", "--json", check=False)
    figures["seconds"]["monitor"] = round(clock() - start, 1)
    report = json.loads(mon.stdout)
    figures["monitor"] = {"exit_code": mon.returncode, "alerts": report["alerts"],
                          "signals": {s["name"]: {"status": s["status"], "value": s["value"], "p": s["p_value"],
                                                  "interval": s["interval"]} for s in report["signals"]},
                          "report": report["files"]["html"]}

    # 4. Export and review (a scripted reviewer who knows the true intents).
    tunesmith(project, "logs", "export", "--out", "reviewed.jsonl")
    tunesmith(project, "data", "review", "export", "reviewed.jsonl", "--out", "sheet.csv")
    truth = dict(traffic)
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
    tunesmith(project, "data", "review", "import", "sheet.csv", "--into", "reviewed.jsonl", "--reviewer", "script")

    # 5. Retrain; the server follows the promotion.
    start = clock()
    outcome = json.loads(tunesmith(project, "retrain", "--json").stdout)
    figures["seconds"]["retrain"] = round(clock() - start, 1)
    figures["retrain"] = {k: outcome[k] for k in ("candidate", "promoted", "reasons", "changes", "comparisons")}
    if outcome["promoted"]:
        deadline = time.time() + 120
        while next(m for m in client.models.list().data if m.id == "production").tunesmith["run_id"] != outcome["candidate"]:
            if time.time() > deadline:
                raise SystemExit("the server did not follow the promotion")
            time.sleep(0.5)
        sample = [(t, lab) for t, lab in traffic if lab in NEW][:40]
        after = [ask(item) for item in sample]
        figures["server_after_promotion"] = {"run": outcome["candidate"], "requests": len(after),
                                             "accuracy_on_new_intent_traffic": round(
                                                 sum(a == lab for _, lab, a, _ in after) / len(after), 4)}
    server.send_signal(signal.SIGTERM)
    figures["server_exit_code"] = server.wait(120)

    # 6. Shuffled labels: refused.
    labels = V1 + NEW
    lines = []
    for line in (project / "reviewed.jsonl").read_text().splitlines():
        row = json.loads(line)
        row["messages"][-1]["content"] = rng.choice(labels)
        lines.append(json.dumps(row))
    (project / "shuffled.jsonl").write_text("\n".join(lines) + "\n")
    (project / "shuffled.yaml").write_text((project / "tunesmith.yaml").read_text().replace(
        "new_data: [reviewed.jsonl]", "new_data: [shuffled.jsonl]"))
    start = clock()
    refused = json.loads(tunesmith(project, "retrain", "-c", "shuffled.yaml", "--json").stdout)
    figures["seconds"]["shuffled retrain"] = round(clock() - start, 1)
    figures["shuffled"] = {k: refused[k] for k in ("candidate", "promoted", "reasons", "comparisons")}
    figures["production_at_the_end"] = tunesmith(project, "aliases", "--json").stdout
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
