"""Benchmark: evaluation of a many-label classification task with and without the inference prefix cache.

A 150-label task (labels written here, as an intent-routing team would name them: ``billing_refund_status``...):
every prompt opens with the same system prompt listing all labels (about 650 tokens with the embedded
model's tokenizer), then the message. The same rows are answered twice in one process, greedily and
within the label set as ``tunesmith`` evaluates classification: (a) every row prefills the whole
prompt; (b) the shared opening is computed once (``PrefixCache``) and rows prefill only their own
tokens. It counts the answers that differ between the two (none in fp32; under bf16 autocast the
shared opening computed on its own rounds differently from the whole prompt, and near-ties can
flip) and prints the time of each and the ratio (a)/(b).

Usage: python bench/prefix_cache.py [--rows 750] [--batch-size 32] [--json]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AREAS = ["billing", "card", "account", "transfer", "loan", "savings", "app", "security", "travel", "business"]
TOPICS = ["refund_status", "limit_change", "fee_question", "not_working", "cancel_request", "new_request",
          "address_update", "statement_copy", "fraud_report", "interest_rate", "upgrade_plan", "close_request",
          "document_upload", "delay_complaint", "contact_details"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=750)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--precision", default="auto", help="auto (bf16 autocast where the CPU has it) or fp32")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from tunesmith.data.encode import encode_prompt
    from tunesmith.data.examples import Example
    from tunesmith.data.prepare import render_system_prompt
    from tunesmith.inference.constrained import constrained_answers, label_trie
    from tunesmith.inference.generate import shared_prefix_length
    from tunesmith.models.load import load_base_model
    from tunesmith.models.resolve import resolve_base
    from tunesmith.tasks import get_task

    labels = [f"{a}_{t}" for a in AREAS for t in TOPICS]
    with (ROOT.parent / "shared" / "data" / "banking77" / "test.csv").open(encoding="utf-8") as fh:
        texts = [r["text"] for r in csv.DictReader(fh)][: args.rows]
    lm = load_base_model(resolve_base("smollm2-135m-instruct"), precision=args.precision)
    system = render_system_prompt(get_task("classification").system_prompt, labels)
    prompts = [encode_prompt(lm.tokenizer, Example(id=str(i), prompt=t, target=""), system, 2048)
               for i, t in enumerate(texts)]
    trie = label_trie(lm.tokenizer, labels, system)
    times, answers = {}, {}
    for name, cache in (("without", False), ("with", True)):
        start = time.perf_counter()
        answers[name] = constrained_answers(lm, prompts, trie, args.batch_size, label=f"{name} cache", prefix_cache=cache)
        times[name] = time.perf_counter() - start
    differ = sum(a.label != b.label for a, b in zip(answers["with"], answers["without"]))
    same = differ == 0
    result = {"rows": len(prompts), "labels": len(labels), "prompt_tokens": sum(map(len, prompts)) / len(prompts),
              "shared_tokens": shared_prefix_length(prompts), "seconds_without": round(times["without"], 1),
              "seconds_with": round(times["with"], 1), "ratio": round(times["without"] / times["with"], 2),
              "same_answers": same, "answers_differing": differ,
              "precision": "bf16 autocast" if lm.autocast_dtype is not None else "fp32"}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['rows']} rows, {result['labels']} labels, prompts of {result['prompt_tokens']:.0f} tokens on average, "
          f"{result['shared_tokens']} of them shared")
    print(f"without the prefix cache {result['seconds_without']} s, with it {result['seconds_with']} s: "
          f"{result['ratio']}x; answers differing: {differ} of {result['rows']} ({result['precision']})")


if __name__ == "__main__":
    main()
