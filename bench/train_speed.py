"""Benchmark: LoRA training speed and memory, tunesmith's trainer against the plain Trainer + PEFT recipe.

On the embedded default model (SmolLM2-135M-Instruct) and the quickstart's banking77 messages
rendered through the chat template with completion-only labels, it trains the same LoRA (r=16,
alpha=32, dropout 0.05, every linear layer) on the same examples for one epoch, twice, each in a
process of its own so that each peak resident memory is that recipe's alone:
- (a) the plain recipe a user would write: ``transformers.Trainer`` + ``peft``, batches padded by
  ``DataCollatorForSeq2Seq``, ``use_cpu=True``, bf16 autocast where the CPU runs it natively;
- (b) tunesmith's trainer, as ``tunesmith run`` calls it (``train_adapter`` on the loaded model).
Both get the same token ids, batch size, learning rate, schedule, warm-up, clipping and seed.

For each it prints non-padding tokens per second (every token of every example trained on), the
tokens the model actually computed per second (fewer for tunesmith where a batch's examples share a
prefix it computes once), wall seconds of training, the training loss over
the last quarter of the steps, validation loss and test accuracy of the tuned model (both computed
by the same code for the two), and peak RSS at the end of training (the JSON also has the peak
with evaluation); then the speed ratio (b)/(a), the memory ratio, and
tunesmith's model FLOPs utilisation (the FLOPs of the tokens it computed) against this machine's
bf16 and fp32 matmul peaks, measured in the same run.

With ``--same-order`` the plain Trainer reads the examples in tunesmith's batch order (its own
shuffle is another random order), so that loss and accuracy differ by recipe rather than by data order.

With ``--long TOKENS`` every example is a chat log cut to TOKENS tokens with a system message of its
own, so that no two examples share an opening (documents, passages, long chats); ``--micro-batch N``
gives both recipes forward passes of N examples, gradients accumulated up to ``--batch-size``.

Usage: python bench/train_speed.py [--examples 256] [--batch-size 8] [--seed N] [--same-order] [--json]
       python bench/train_speed.py --long 512 --examples 64 --batch-size 16 --skip-eval --same-order
       python bench/train_speed.py --long 1024 --examples 48 --batch-size 16 --micro-batch 8 --skip-eval --same-order
       python bench/train_speed.py --only tunesmith --without packing --skip-eval   (what packing buys)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments
from transformers.utils import logging as hf_logging

from tunesmith.config import load_config
from tunesmith.data.encode import encode_example, encode_prompt
from tunesmith.data.prepare import prepare_splits
from tunesmith.inference.generate import generate_batched
from tunesmith.models.adapters import BuildContext, apply_adapter, get_method
from tunesmith.models.load import load_base_model, load_tokenizer
from tunesmith.models.precision import choose_precision
from tunesmith.models.resolve import resolve_base
from tunesmith.fastpath.apply import PARTS
from tunesmith.project import init_project
from tunesmith.plan.cost import build_on_meta, head_cost, step_cost
from tunesmith.train.batching import random_batches
from tunesmith.train.loop import train_adapter
from tunesmith.train.loss import evaluate_loss
from tunesmith.console import peak_rss_mb

LORA = {"r": 16, "alpha": 32, "dropout": 0.05}


def _data(n: int, long: int | None = None) -> tuple[Any, list, list, list, list[str], str | None]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg, base = load_config(init_project(Path(tmp) / "quickstart", "classification"))
        splits = prepare_splits(cfg, base)
    if n > len(splits.train):
        raise SystemExit(f"--examples {n}: the quickstart's training split has {len(splits.train)}")
    cfg = cfg.model_copy(update={"adapter": cfg.adapter.model_copy(update={"method": "lora", **LORA,
                                                                           "target_modules": "all-linear"})})
    train, val, test, system = splits.train[:n], splits.validation, splits.test, splits.system_prompt
    if long:
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"max_seq_len": long})})
        pool = [e.prompt for e in splits.train]
        train, val, test = (_long_examples(part, pool, system, long, k) for k, part in enumerate((train, val, test)))
    return cfg, train, val, test, [e.target for e in test], system


def _long_examples(examples: list, pool: list[str], system: str | None, tokens: int, part: int) -> list:
    """Each example as the last message of a long customer chat log, with a system message of its own.

    The log is other customers' messages, more than ``tokens`` fit, so that encoding cuts every
    example to ``max_seq_len`` in the middle of its log; the system message opens with the case's own
    number, so that no two examples share an opening (like passages, documents or long chats).
    """
    rng = random.Random(part)
    out = []
    for ex in examples:
        log = "\n".join(f"Customer: {rng.choice(pool)}" for _ in range(tokens // 8))
        case = f"Case {rng.randrange(10**6):06d}. Classify the customer's last message. {system or ''}"
        out.append(dataclasses.replace(ex, prompt=f"{log}\nLast message: {ex.prompt}", system=case))
    return out


def _evaluate(lm: Any, val: list, test_prompts: list, targets: list[str]) -> dict[str, float]:
    """Validation loss and test accuracy, computed the same way for both recipes."""
    val_loss = evaluate_loss(lm.model, val, lm.tokenizer.pad_token_id, 16, lm.device, lm.autocast)
    answers = generate_batched(lm, test_prompts, max_new_tokens=16, batch_size=32, label="test")
    accuracy = sum(a.strip() == t.strip() for a, t in zip(answers, targets)) / len(targets)
    return {"val_loss": round(val_loss, 4), "test_accuracy": round(accuracy, 4)}


def _last_quarter(losses: list[float]) -> float:
    tail = losses[-max(1, len(losses) // 4):]
    return round(sum(tail) / len(tail), 4)


def run_recipe(recipe: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train with one recipe in this process and measure it."""
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    cfg, train, val_ex, test_ex, targets, system = _data(args.examples, args.long)
    path = resolve_base(cfg.model.base)
    lm = load_base_model(path, cfg.model.precision)
    encode = lambda ex: encode_example(lm.tokenizer, ex, system, cfg.model.max_seq_len)  # noqa: E731
    train_enc, val_enc = [encode(e) for e in train], [encode(e) for e in val_ex]
    test_prompts = [encode_prompt(lm.tokenizer, e, system, cfg.model.max_seq_len) for e in test_ex]
    method = get_method("lora")
    lr = method.default_lr
    micro = args.micro_batch or args.batch_size
    if args.batch_size % micro:
        raise SystemExit(f"--micro-batch {micro} does not divide --batch-size {args.batch_size}")
    tcfg = cfg.train.model_copy(update={"epochs": 1, "max_steps": None, "batch_size": micro,
                                        "grad_accum": args.batch_size // micro, "lr": lr,
                                        "logging_steps": 1,
                                        "eval_every": None, "early_stopping_patience": None})
    steps = math.ceil(len(train_enc) / args.batch_size)
    seed = cfg.project.seed if args.seed is None else args.seed
    torch.manual_seed(seed)
    if recipe == "tunesmith":
        if args.without:  # measure what the left-out parts of the fast path buy: the project setting, as a user sets it
            left_out = set(args.without.split(","))
            tcfg = tcfg.model_copy(update={"fast_path": [p for p in PARTS if p not in left_out]})
        lm.model = apply_adapter(lm.model, cfg.adapter, BuildContext(total_steps=steps, model_path=path))
        start = time.perf_counter()
        result = train_adapter(lm, train_enc, [], tcfg, seed=seed, method=method)
        seconds = time.perf_counter() - start
        losses = [r["train_loss"] for r in result.history if "train_loss" in r]
        fast_path, computed = result.fast_path, result.computed_tokens
        if fast_path["warnings"]:  # a half-applied path would measure something other than what tunesmith is
            raise SystemExit("the fast path did not apply in full, so there is nothing true to measure:\n  "
                             + "\n  ".join(fast_path["warnings"]))
        if result.steps != steps or result.tokens != sum(len(e.input_ids) for e in train_enc):
            raise SystemExit(f"tunesmith trained {result.steps} steps and {result.tokens} tokens, not one whole epoch")
    else:
        order = ([i for batch in random_batches(len(train_enc), micro, seed * 1000) for i in batch]
                 if args.same_order else None)
        losses, seconds = _plain_trainer(lm, seed, train_enc, tcfg, lr, steps, order)
        fast_path, computed = {}, sum(len(e.input_ids) for e in train_enc)
    out = {"recipe": recipe, "examples": len(train_enc), "steps": steps,
           "tokens": sum(len(e.input_ids) for e in train_enc), "seconds": round(seconds, 2),
           "final_train_loss": _last_quarter(losses), "precision": "bf16" if lm.autocast_dtype else "fp32"}
    out["tokens_per_second"] = round(out["tokens"] / seconds, 1)
    out["computed_tokens"] = computed
    out["computed_tokens_per_second"] = round(computed / seconds, 1)
    # Training's peak, before evaluation's batches can raise it; the process's peak with evaluation apart.
    out["peak_rss_mib"] = round(peak_rss_mb(), 1)
    out["fast_path"] = fast_path
    if not args.skip_eval:
        out.update(_evaluate(lm, val_enc, test_prompts, targets))
        out["peak_rss_with_eval_mib"] = round(peak_rss_mb(), 1)
    return out


class _InOrder(Trainer):
    """A Trainer that reads the training examples in the order given (``--same-order``)."""

    def _get_train_sampler(self, *args: Any, **kwargs: Any) -> torch.utils.data.Sampler:
        return torch.utils.data.SequentialSampler(self.train_dataset)


def _plain_trainer(lm: Any, seed: int, train_enc: list, tcfg: Any, lr: float, steps: int,
                   order: list[int] | None = None) -> tuple[list[float], float]:
    """The recipe of the transformers and peft documentation, with nothing tuned for speed.

    With ``order``, the examples are read in that order instead of the Trainer's own shuffle.
    """
    lm.model = get_peft_model(lm.model, LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                                   target_modules="all-linear", task_type="CAUSAL_LM"))
    ds = [{"input_ids": e.input_ids, "attention_mask": [1] * len(e.input_ids), "labels": e.labels}
          for e in (train_enc if order is None else [train_enc[i] for i in order])]
    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=tcfg.batch_size, gradient_accumulation_steps=tcfg.grad_accum,
            num_train_epochs=1, learning_rate=lr,
            lr_scheduler_type=tcfg.scheduler, warmup_steps=int(tcfg.warmup_ratio * steps), weight_decay=tcfg.weight_decay,
            max_grad_norm=tcfg.max_grad_norm, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
            bf16=lm.autocast_dtype is not None, seed=seed, disable_tqdm=True)
        trainer = (Trainer if order is None else _InOrder)(model=lm.model, args=targs, train_dataset=ds,
                          data_collator=DataCollatorForSeq2Seq(lm.tokenizer, padding=True, label_pad_token_id=-100))
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    lm.model.eval()
    return [r["loss"] for r in trainer.state.log_history if "loss" in r], seconds


def matmul_peak(dtype: torch.dtype, size: int = 1024, seconds: float = 2.0) -> float:
    """GFLOP/s of a square matrix product in ``dtype`` with PyTorch's threads (the best of one-second windows)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < 0.5:
            torch.mm(a, b)
            n += 1
        best = max(best, 2 * size**3 * n / elapsed / 1e9)
    return best


def model_flops(args: argparse.Namespace, computed_tokens: int) -> float:
    """FLOPs of one epoch's work as computed: forward and backward of the layers over ``computed_tokens``,
    attention within each example, the head on labels (padding not counted)."""
    cfg, train, *_ , system = _data(args.examples, args.long)
    path = resolve_base(cfg.model.base)
    meta = build_on_meta(path, cfg.adapter)
    per_token, per_pair = step_cost(meta).flops
    hidden, vocab, _ = head_cost(meta)
    lm_tok = load_tokenizer(path, False)
    total = per_token * computed_tokens
    for ex in train:
        e = encode_example(lm_tok, ex, system, cfg.model.max_seq_len)
        total += per_pair * len(e.input_ids) ** 2 + e.n_completion * 2.0 * hidden * vocab * 2
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=256, help="training examples (one epoch)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--micro-batch", type=int, help="examples per forward pass for both recipes (gradients "
                                                   "accumulated up to --batch-size): for shapes the plain recipe "
                                                   "cannot hold in memory in one pass")
    ap.add_argument("--long", type=int, metavar="TOKENS",
                    help="long examples: each one a chat log cut to TOKENS tokens, with no opening shared "
                         "with another example (model.max_seq_len = TOKENS)")
    ap.add_argument("--seed", type=int, help="seed of adapter initialisation, data order and dropout "
                                             "(default: the project's); the data split stays the same")
    ap.add_argument("--recipe", choices=["plain", "tunesmith"], help=argparse.SUPPRESS)
    ap.add_argument("--only", choices=["plain", "tunesmith"], help="run one recipe (for profiling)")
    ap.add_argument("--without", default="", help="tunesmith without these parts of its fast path, comma-separated "
                                                  f"({', '.join(PARTS)}): what each buys")
    ap.add_argument("--same-order", action="store_true",
                    help="the plain Trainer reads the examples in tunesmith's batch order instead of its own shuffle, "
                         "so that losses differ by recipe, not by data order")
    ap.add_argument("--skip-eval", action="store_true", help="no validation loss or test accuracy (speed and memory only)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    if args.recipe:
        print(json.dumps(run_recipe(args.recipe, args)))
        return
    peaks = {"bf16": round(matmul_peak(torch.bfloat16), 1), "fp32": round(matmul_peak(torch.float32), 1)}
    results: dict[str, Any] = {"peak_gflops": peaks,
                               "cpu_bf16_autocast": choose_precision("auto", torch.device("cpu")) is not None}
    for recipe in ["plain", "tunesmith"] if not args.only else [args.only]:
        print(f"training with the {recipe} recipe ...", file=sys.stderr)
        seed = [] if args.seed is None else ["--seed", str(args.seed)]
        extra = [*seed, *(["--micro-batch", str(args.micro_batch)] if args.micro_batch else []),
                 *(["--long", str(args.long)] if args.long else []), *(["--without", args.without] if args.without else []),
                 *(["--skip-eval"] if args.skip_eval else []),
                 *(["--same-order"] if args.same_order else [])]
        res = subprocess.run([sys.executable, __file__, "--recipe", recipe, "--examples", str(args.examples),
                              "--batch-size", str(args.batch_size), *extra], capture_output=True, text=True,
                             env={**os.environ, "TQDM_DISABLE": "1"})
        if res.returncode != 0:
            raise SystemExit(f"the {recipe} recipe failed:\n{res.stderr[-3000:]}")
        results[recipe] = json.loads(res.stdout.strip().splitlines()[-1])
    if not args.only:
        a, b = results["plain"], results["tunesmith"]
        flops = model_flops(args, b["computed_tokens"])
        results["speed_ratio"] = round(b["tokens_per_second"] / a["tokens_per_second"], 2)
        results["memory_ratio"] = round(b["peak_rss_mib"] / a["peak_rss_mib"], 3)
        achieved = flops / b["seconds"] / 1e9
        results["tunesmith_model_gflops"] = round(achieved, 1)
        results["tunesmith_mfu"] = {k: round(achieved / v, 3) for k, v in peaks.items()}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print_report(results)


def print_report(results: dict[str, Any]) -> None:
    """The results as a table for people (``--json`` prints them for scripts)."""
    peaks = results["peak_gflops"]
    print(f"matmul peak on this machine: bf16 {peaks['bf16']} GFLOP/s, fp32 {peaks['fp32']} GFLOP/s; "
          f"bf16 autocast {'on' if results['cpu_bf16_autocast'] else 'off (no native bf16 on this CPU)'}")
    print(f"{'recipe':<11}{'tokens/s':>10}{'computed/s':>12}{'seconds':>10}{'train loss':>12}{'val loss':>10}"
          f"{'test acc':>10}{'peak RSS':>11}")
    for recipe in ("plain", "tunesmith"):
        if recipe in results:
            r = results[recipe]
            quality = (f"{r['val_loss']:>10.4f}{r['test_accuracy']:>10.3f}" if "val_loss" in r
                       else f"{'-':>10}{'-':>10}")
            print(f"{recipe:<11}{r['tokens_per_second']:>10.1f}{r['computed_tokens_per_second']:>12.1f}"
                  f"{r['seconds']:>10.1f}{r['final_train_loss']:>12.4f}{quality}{r['peak_rss_mib'] / 1024:>8.2f} GiB")
    if "tunesmith" in results:
        print(f"tunesmith's fast path: {results['tunesmith']['fast_path']}")
    if "speed_ratio" in results:
        print(f"speed (tunesmith / plain Trainer + PEFT): {results['speed_ratio']}x;  "
              f"memory (tunesmith / plain): {results['memory_ratio']}")
        print(f"tunesmith model FLOPs (of the tokens it computed): {results['tunesmith_model_gflops']} GFLOP/s = "
              f"{results['tunesmith_mfu']['bf16']:.1%} of the bf16 matmul peak, "
              f"{results['tunesmith_mfu']['fp32']:.1%} of the fp32 peak")


if __name__ == "__main__":
    main()
