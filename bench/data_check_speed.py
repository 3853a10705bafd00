"""Benchmark: `tunesmith data check` throughput on synthetic rows of about 100 tokens.

Generates N rows (default 100,000) of prompt/response text with planted exact duplicates,
near-duplicates and PII, runs `tunesmith data check FILE --json` on them as a user would (read,
validate, clean, PII scan, exact and near-duplicate detection, split, leakage, token lengths with
the model's tokenizer, the report), and prints the wall time, rows per second, and the ratio to
the 60-second goal for 100,000 rows. It then times MinHash signatures for the same rows with
datasketch's own ``MinHash.update_batch`` (SHA-1 per shingle), the baseline, against tunesmith's
vectorised signatures, and prints the ratio.

Usage: python bench/data_check_speed.py [--rows 100000]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from datasketch import MinHash

from tunesmith.data.minhash import shingles, signatures

WORDS = ("account card transfer payment balance refund limit app phone pin exchange rate fee statement "
         "branch online mobile deposit withdrawal savings loan interest credit debit charge pending failed "
         "cancel verify identity address email password login security alert travel abroad currency").split()


def make_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        r = rng.random()
        if r < 0.02 and rows:
            rows.append(dict(rng.choice(rows)))  # exact duplicate
            continue
        if r < 0.04 and rows:
            base = dict(rng.choice(rows))
            base["prompt"] = base["prompt"].replace(" the ", " a ", 1) + " please"  # near duplicate
            rows.append(base)
            continue
        prompt = " ".join(rng.choice(WORDS) for _ in range(45)) + f" ticket {i}?"
        if r < 0.05:
            prompt += f" Reach me at user{i}@example.com."
        response = " ".join(rng.choice(WORDS) for _ in range(30)) + "."
        rows.append({"prompt": prompt, "response": response})
    return rows


def baseline_signatures(texts: list[str], num_perm: int = 128, n: int = 5) -> float:
    """Seconds datasketch's own MinHash (SHA-1 per shingle, update_batch) takes for the same shingles."""
    start = time.perf_counter()
    for text in texts:
        mh = MinHash(num_perm=num_perm, seed=1)
        mh.update_batch(shingles(text, n))
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--baseline-rows", type=int, default=10_000, help="rows for the MinHash baseline comparison")
    args = ap.parse_args()
    exe = Path(sys.executable).with_name("tunesmith")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.jsonl"
        rows = make_rows(args.rows)
        with path.open("w") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
        # Warm the model cache so the timing below is the data check, not the one-off model conversion.
        warm = path.with_name("warm.jsonl")
        warm.write_text("".join(json.dumps(row) + "\n" for row in rows[:50]))
        subprocess.run([str(exe), "data", "check", str(warm), "--json"], cwd=tmp, capture_output=True, check=False)
        start = time.perf_counter()
        done = subprocess.run([str(exe), "data", "check", str(path), "--json", "--out", str(Path(tmp) / "report")],
                              cwd=tmp, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"data check failed:\n{done.stderr[-3000:]}")
        summary = json.loads(done.stdout)
        texts = [f"{r['prompt']} || {r['response']}".lower() for r in rows[: args.baseline_rows]]
        base_s = baseline_signatures(texts)
        start = time.perf_counter()
        signatures(texts)
        ours_s = time.perf_counter() - start
    goal = 60.0 * args.rows / 100_000
    tokens = summary["tokens"]["train"]
    print(f"rows: {args.rows:,}  kept: {summary['rows_kept']:,}  removed: {summary['removed']}  pii: {summary['pii']}")
    print(f"train tokens per example: median {tokens['p50']}, mean {tokens['mean']} (model tokenizer, chat template included)")
    print(f"tunesmith data check (whole command, report included): {seconds:.1f} s, {args.rows / seconds:,.0f} rows/s")
    print(f"goal: {goal:.0f} s for {args.rows:,} rows -> {goal / seconds:.2f}x the required speed "
          f"({'met' if seconds <= goal else 'NOT met'})")
    print(f"MinHash signatures of {len(texts):,} rows: datasketch update_batch {base_s:.2f} s, "
          f"tunesmith vectorised {ours_s:.2f} s -> {base_s / ours_s:.1f}x")


if __name__ == "__main__":
    main()
