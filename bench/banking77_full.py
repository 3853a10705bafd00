"""Benchmark: the full banking77 (77 intents) with the embedded 135M model on this machine's CPU.

The official splits (../shared/data/banking77: 10,003 training rows, 3,080 test rows; PolyAI,
CC BY 4.0), used as published (no de-duplication); 5% of each intent's training rows, seeded,
become the validation split. One
``tunesmith run`` with a classification head (``adapter.head: classify``, LoRA r=16 on every
linear layer, the head trained with it) or, with ``--head generate``, with answers generated and
constrained to the labels (the 77-label list then sits in every prompt). It prints test accuracy
with its 95% interval, macro-F1, training minutes, evaluation seconds, and the throughput, as
measured in this run; ``--rows N`` trains on the first N training rows (a learning curve).

The untuned baseline is skipped unless ``--baseline`` is given: with 77 labels in the prompt its
generative evaluation of 3,080 rows takes longer than the training being measured.

With ``--plan`` it first runs ``tunesmith plan`` on the same project and prints the planned
training time (validations included) and peak memory beside the measured ones.

Usage: python bench/banking77_full.py [--head classify|generate] [--epochs 2] [--lr 1e-3] [--rows N]
                                      [--batch-size 16] [--baseline] [--plan] [--out DIR] [--json]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "banking77"


def write_splits(folder: Path, rows: int | None, seed: int = 0) -> dict[str, int]:
    """train/validation/test JSONL from the official CSVs: 5% of each intent's training rows validate."""
    def read(name: str) -> list[dict[str, str]]:
        with (DATA / name).open(encoding="utf-8") as fh:
            return [{"text": r["text"], "label": r["category"]} for r in csv.DictReader(fh)]

    train, test = read("train.csv"), read("test.csv")
    by_label: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in train:
        by_label[r["label"]].append(r)
    rng = random.Random(seed)
    fit, val = [], []
    for label in sorted(by_label):
        items = by_label[label]
        rng.shuffle(items)
        n_val = max(1, round(0.05 * len(items)))
        val += items[:n_val]
        fit += items[n_val:]
    rng.shuffle(fit)
    if rows:
        fit = fit[:rows]
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", fit), ("validation", val), ("test", test)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
    return {"train": len(fit), "validation": len(val), "test": len(test)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--head", choices=["classify", "generate"], default="classify")
    ap.add_argument("--epochs", type=float, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rows", type=int, default=None, help="train on the first N training rows only")
    ap.add_argument("--max-seq-len", type=int, default=None)
    ap.add_argument("--baseline", action="store_true", help="also evaluate the untuned model (slow: 77 labels in the prompt)")
    ap.add_argument("--plan", action="store_true",
                    help="run `tunesmith plan` on the same project first and print its training time beside the real one")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from tunesmith.config import load_config
    from tunesmith.recipes.finetune import run_pipeline

    folder = args.out or Path(tempfile.mkdtemp(prefix="banking77-full-"))
    counts = write_splits(folder / "data", args.rows)
    max_len = args.max_seq_len or (96 if args.head == "classify" else 768)
    (folder / "tunesmith.yaml").write_text(
        "project: {name: banking77-full, seed: 42}\n"
        "objective: {task: classification, metric: accuracy, target: 0.9}\n"
        # The official splits as published: no row is de-duplicated away (the test set holds near-duplicates).
        "data: {train: data/train.jsonl, validation: data/validation.jsonl, test: data/test.jsonl, format: text_label,\n"
        "       dedup: {exact: false, near: false, leakage: report}}\n"
        f"model: {{base: smollm2-135m-instruct, max_seq_len: {max_len}}}\n"
        f"adapter: {{method: lora, r: 16, alpha: 32, head: {args.head}}}\n"
        f"train: {{epochs: {args.epochs}, batch_size: {args.batch_size}, lr: {args.lr}, eval_every: 200,\n"
        "        early_stopping_patience: null, logging_steps: 20}\n"
        f"eval: {{batch_size: 32, baseline: {str(args.baseline).lower()}, forgetting: {{enabled: false}}}}\n",
        encoding="utf-8")
    cfg, base = load_config(folder / "tunesmith.yaml")
    plan = None
    if args.plan:
        from tunesmith.plan.estimate import plan_training
        plan = plan_training(cfg, base)
    run = run_pipeline(cfg, base)
    report = json.loads(run.report_json.read_text())
    iv, train = report["interval"], report["train"]
    result = {
        "head": args.head, "rows": counts, "evaluated": report["data"]["test"], "epochs": args.epochs, "lr": args.lr, "max_seq_len": max_len,
        "accuracy": report["tuned"]["metrics"]["accuracy"], "interval": [iv["low"], iv["high"]],
        "macro_f1": report["tuned"]["metrics"]["macro_f1"], "verdict": report["verdict"],
        "train_minutes": round(train["seconds"] / 60, 2), "tokens_per_second": train["tokens_per_second"],
        "eval_seconds": report["tuned"]["seconds"], "peak_rss_gib": round(train["peak_rss_mb"] / 1024, 2),
        "baseline_accuracy": (report.get("baseline") or {}).get("metrics", {}).get("accuracy"),
        "run": str(run.root),
    }
    if plan is not None:  # the plan's training includes its validations, as the run's training time does
        result["planned_train_minutes"] = round(plan["time"]["total_seconds"] / 60, 2)
        result["planned_over_measured"] = round(plan["time"]["total_seconds"] / train["seconds"], 3)
        result["planned_peak_gib"] = plan["memory"]["total_gib"]
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"banking77 full, head {args.head}: {counts['train']} training rows, {result['evaluated']} test rows evaluated")
    print(f"test accuracy {result['accuracy']:.4f}, 95% interval [{iv['low']:.4f}, {iv['high']:.4f}]; "
          f"macro-F1 {result['macro_f1']:.4f}; verdict against 0.9: {result['verdict']}")
    print(f"training {result['train_minutes']:.1f} min ({result['tokens_per_second']:.0f} tokens/s, peak "
          f"{result['peak_rss_gib']} GiB); evaluation of the test set {result['eval_seconds']:.0f} s")
    if plan is not None:
        print(f"tunesmith plan beforehand: training {result['planned_train_minutes']:.1f} min "
              f"({result['planned_over_measured']:.2f}x the measured), peak {result['planned_peak_gib']:.2f} GiB")
    if result["baseline_accuracy"] is not None:
        print(f"untuned baseline (generative, label list in the prompt): accuracy {result['baseline_accuracy']:.4f}")
    print(f"run folder: {run.root}")


if __name__ == "__main__":
    main()
