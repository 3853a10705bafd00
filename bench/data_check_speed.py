"""Benchmark: `tunesmith data check` throughput on synthetic rows of about 100 tokens.

Generates N rows (default 100,000) of prompt/response text with planted exact duplicates,
near-duplicates and PII, runs the same preparation `data check` runs (read, validate, clean,
PII scan, exact and near-duplicate detection, split, leakage), and prints the wall time,
rows per second, and the ratio to the 60-second goal for 100,000 rows.

Usage: python bench/data_check_speed.py [--rows 100000]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from tunesmith.config import Config
from tunesmith.data.prepare import prepare_splits

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.jsonl"
        with path.open("w") as fh:
            for row in make_rows(args.rows):
                fh.write(json.dumps(row) + "\n")
        cfg = Config.model_validate({"objective": {"task": "generation"}, "data": {"train": str(path)}})
        start = time.perf_counter()
        splits = prepare_splits(cfg, Path(tmp), require_test=False)
        seconds = time.perf_counter() - start
    acc = splits.accounting()
    goal = 60.0 * args.rows / 100_000
    print(f"rows: {args.rows:,}  kept: {acc['kept']:,}  removed: {acc['removed']}  pii: {acc['pii']}")
    print(f"data check preparation: {seconds:.1f} s, {args.rows / seconds:,.0f} rows/s")
    print(f"goal: {goal:.0f} s for {args.rows:,} rows -> {goal / seconds:.2f}x the required speed "
          f"({'met' if seconds <= goal else 'NOT met'})")


if __name__ == "__main__":
    main()
