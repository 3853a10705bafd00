"""Benchmark: evaluation generation, batched with the KV cache, against a one-prompt-at-a-time loop.

On the embedded default model and the quickstart's banking77 messages rendered through the chat
template, it generates greedily for the same prompts twice:
- (a) the baseline: a plain loop calling ``model.generate`` on one prompt at a time;
- (b) tunesmith's evaluator path (``generate_batched``: length-sorted, left-padded batches);
and prints prompts/s and generated tokens/s for each, the speed ratio (b)/(a) (goal: at least
3x), and how many outputs are identical.

Usage: python bench/eval_speed.py [--prompts 64] [--batch-size 32] [--max-new-tokens 16]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from tunesmith.config import load_config
from tunesmith.data.encode import encode_prompt
from tunesmith.data.prepare import prepare_splits
from tunesmith.inference.generate import generate_batched
from tunesmith.models.load import load_base_model
from tunesmith.models.resolve import resolve_base
from tunesmith.project import init_project


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    args = ap.parse_args()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        cfg, base = load_config(init_project(Path(tmp) / "quickstart", "classification"))
        splits = prepare_splits(cfg, base)
    examples = (splits.test + splits.validation + splits.train)[: args.prompts]
    lm = load_base_model(resolve_base(cfg.model.base, status=print))
    prompts = [encode_prompt(lm.tokenizer, ex, splits.system_prompt, cfg.model.max_seq_len) for ex in examples]
    tok, model = lm.tokenizer, lm.model
    model.eval()

    start = time.perf_counter()
    single, single_tokens = [], 0
    with torch.no_grad():
        for ids in prompts:
            out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=args.max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.eos_token_id, temperature=None, top_p=None, top_k=None)
            new = out[0, len(ids):]
            single_tokens += int((new != tok.pad_token_id).sum())
            single.append(tok.decode(new, skip_special_tokens=True).strip())
    a = time.perf_counter() - start

    start = time.perf_counter()
    batched = generate_batched(lm, prompts, args.max_new_tokens, args.batch_size, label="batched")
    b = time.perf_counter() - start
    batched_tokens = sum(len(tok(o, add_special_tokens=False)["input_ids"]) for o in batched)
    same = sum(x == y for x, y in zip(single, batched))
    n = len(prompts)
    print(f"{n} prompts (mean {sum(map(len, prompts)) / n:.0f} tokens), greedy, up to {args.max_new_tokens} new tokens, "
          f"{torch.get_num_threads()} threads")
    print(f"(a) one prompt at a time, model.generate: {a:.1f} s, {n / a:.2f} prompts/s, {single_tokens / a:.1f} new tokens/s")
    print(f"(b) tunesmith generate_batched (batch {args.batch_size}): {b:.1f} s, {n / b:.2f} prompts/s, "
          f"{batched_tokens / b:.1f} new tokens/s")
    print(f"speed ratio (b)/(a): {a / b:.2f}x (goal: at least 3x)")
    print(f"identical outputs: {same}/{n}")


if __name__ == "__main__":
    main()
