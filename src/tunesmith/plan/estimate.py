"""``tunesmith plan``: trainable parameters, peak memory and time of a run, estimated before it is spent.

The estimate rests on the project's real data (every training example encoded as training
encodes it, batched as training batches it), on the model and method built on the meta device
(see :mod:`tunesmith.plan.cost`), and, on this machine, on a few real training steps timed
through the training loop (see :mod:`tunesmith.plan.calibrate`). For a named GPU the time
comes from FLOPs at an assumed share of the GPU's peak, and the output says so.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from rich.table import Table

from tunesmith.config import Config
from tunesmith.data.encode import Encoded, encode_example
from tunesmith.steps.data import base_path, prepare_data
from tunesmith.errors import DataError
from tunesmith.plan.hardware import GPUS, GpuSpec, current_rss_mib, gpu_spec, meminfo_gib
from tunesmith.models.adapters import BuildContext, apply_adapter, check_adapter, get_method
from tunesmith.models.load import load_base_model, load_tokenizer
from tunesmith.models.precision import choose_precision
from tunesmith.fastpath.apply import wanted_parts
from tunesmith.train.batching import packed_length, packed_passes, random_batches, sequential_batches
from tunesmith.plan.calibrate import calibrate, matmul_gflops, representative
from tunesmith.plan.cost import ParamCounts, StepCost, build_on_meta, count_parameters, head_cost, step_cost
from tunesmith.train.loop import plan_steps
from tunesmith.console import console

GIB = 2**30
#: Resident memory per byte of activations autograd keeps: glibc cannot hand one step's freed blocks to the
#: next step's slightly larger tensors, so part of the previous steps' stays resident. Profiled with
#: SmolLM2-135M (LoRA r=16, batches of 8 and 16 of banking77): 1.56x to 1.72x over the first steps.
CPU_ALLOCATOR_FACTOR = 1.7
#: Share of the measured matmul speed, in the precision training computes in, that a CPU training step
#: reaches on the FLOPs it computes (used only with ``--no-measure``): fp32 about 0.45 on the reference machine for
#: SmolLM2-135M with LoRA (60 of 131 GFLOP/s); bf16 autocast 0.16 of the bf16 peak on short examples and 0.29 on
#: long ones (``bench/train_speed.py``, Xeon with AMX). ``share_of_matmul_speed`` in a measured plan's
#: calibration shows it for any model and machine.
CPU_EFFICIENCY = {torch.float32: 0.45, torch.bfloat16: 0.16}
#: Share of the GPU's dense bf16 peak a training step is assumed to reach (model FLOPs utilisation).
GPU_MFU = 0.35
#: Seconds PyTorch spends launching one operation on a GPU (dispatch and kernel launch), assumed;
#: small models are bound by it rather than by arithmetic.
GPU_OP_SECONDS = 10e-6
#: CUDA context, cuBLAS and allocator reserve, assumed.
CUDA_CONTEXT_GIB = 1.0
#: Bytes per weight as loaded: fp32 on the CPU; bf16 on a GPU; for QLoRA, 4-bit NF4 plus one 8-bit scale per block
#: of 64 weights and one fp32 constant per 256 scales (double quantisation).
CPU_WEIGHT_BYTES, GPU_WEIGHT_BYTES, NF4_WEIGHT_BYTES = 4, 2, 0.5 + 1 / 64 + 4 / (64 * 256)
#: Per trained parameter: the fp32 value, its fp32 gradient, and AdamW's two fp32 moments.
TRAINABLE_BYTES = {"weights": 4, "gradients": 4, "optimizer": 8}
#: Per labelled token and vocabulary entry: fp32 log-probabilities kept for the loss, their gradient, the logits' gradient.
LOSS_BYTES = 12


@dataclass(frozen=True)
class Batch:
    """One micro-batch as training will form it.

    Attributes:
        rows: Examples.
        width: Tokens of the longest.
        tokens: Tokens of all its examples.
        labels: Labelled tokens.
        computed: Tokens the model computes where training packs the batch into one row (the CPU
            fast path): ``tokens`` less the copies of an opening every example shares, which the
            row carries once. None where training pads the batch to ``width``.
        squares: With ``computed``, the sum over examples of their length squared: the attention's
            work, which packing keeps within each example.
        largest_pass: With ``computed``, the tokens of its longest forward pass (a batch of long
            examples is trained in several, :func:`~tunesmith.train.batching.packed_passes`): what
            sets the activations' memory.
    """

    rows: int
    width: int
    tokens: int
    labels: int
    computed: int | None = None
    squares: int | None = None
    largest_pass: int | None = None


@dataclass(frozen=True)
class BatchLayout:
    """How the training loop will lay out batches: packed into one row, and with a shared opening once."""

    packs: bool = False
    shares_prefix: bool = False


def _layout(cfg: Config, gpu: GpuSpec | None, model: _Model) -> BatchLayout:
    """What the CPU fast path will do with this project's batches (nothing on a GPU, which pads)."""
    wanted = wanted_parts(cfg.train.fast_path)
    packs = gpu is None and {"fast_attention", "packing"} <= wanted and not model.cost.whole_logits
    return BatchLayout(packs, packs and "prefix_sharing" in wanted)


def _batch(encoded: Sequence[Encoded], idx: Sequence[int], layout: BatchLayout) -> Batch:
    items = [encoded[i] for i in idx]
    lengths = [len(e.input_ids) for e in items]
    batch = Batch(len(items), max(lengths), sum(lengths), sum(e.n_completion for e in items))
    if not layout.packs:
        return batch
    passes = [packed_length(part, layout.shares_prefix) for part in packed_passes(items, layout.shares_prefix)]
    return replace(batch, computed=sum(passes), squares=sum(n * n for n in lengths), largest_pass=max(passes))


def _run_batches(encoded: Sequence[Encoded], cfg: Config, total_steps: int,
                 layout: BatchLayout = BatchLayout()) -> tuple[list[Batch], list[Batch]]:
    """(the first epoch's micro-batches, the whole run's), ordered as ``train_adapter`` does it.

    Each batch is costed as training will lay it out (``layout``): padded to its longest example,
    or packed into one row with the opening its examples share computed once, as the CPU fast
    path does; a plan that counted padded copies of a shared label list put a 150-label task
    at 30 hours an epoch, against 9 minutes measured.
    """
    per_step = cfg.train.grad_accum
    first: list[Batch] = []
    run: list[Batch] = []
    steps, epoch = 0, 0
    while steps < total_steps:
        groups = random_batches(len(encoded), cfg.train.batch_size, seed=cfg.project.seed * 1000 + epoch)
        batches = [_batch(encoded, idx, layout) for idx in groups]
        first = first or batches
        for k in range(0, len(batches), per_step):  # a step takes grad_accum batches, the epoch's last maybe fewer
            if steps == total_steps:
                break
            run += batches[k:k + per_step]
            steps += 1
        epoch += 1
    return first, run


def _eval_batches(encoded: Sequence[Encoded], batch_size: int) -> list[Batch]:
    lengths = [len(e.input_ids) for e in encoded]
    return [Batch(len(idx), max(lengths[i] for i in idx), sum(lengths[i] for i in idx),
                  sum(encoded[i].n_completion for i in idx)) for idx in sequential_batches(lengths, batch_size)]


def _validations(total_steps: int, steps_per_epoch: int, eval_every: int | None) -> int:
    every = eval_every or steps_per_epoch
    return total_steps // every + (total_steps % every != 0)


@dataclass(frozen=True)
class _Model:
    """What the meta-device model gave: its parameter counts, its step cost and its head's size."""

    counts: ParamCounts
    cost: StepCost
    hidden: int
    vocab: int
    head_trained: bool

    def step_flops(self, b: Batch) -> float:
        head = 0.0 if self.cost.whole_logits else b.labels * 2.0 * self.hidden * self.vocab * (2 + self.head_trained)
        if b.computed is not None:
            return self.cost.flops[0] * b.computed + self.cost.flops[1] * b.squares + head
        return self.cost.step_flops(b.rows, b.width) + head

    def eval_flops(self, b: Batch) -> float:
        head = 0.0 if self.cost.whole_logits else b.labels * 2.0 * self.hidden * self.vocab
        return self.cost.eval_flops(b.rows, b.width) + head

    def activation_bytes(self, b: Batch) -> float:
        if b.computed is not None:  # one pass at a time: the longest one's, its attention at most the batch's
            return self.cost.saved[0] * b.largest_pass + self.cost.saved[1] * b.squares
        return self.cost.saved_bytes(b.rows, b.width)

    def loss_bytes(self, b: Batch) -> float:
        whole = b.rows * b.width * self.vocab * 4 if self.cost.whole_logits else 0
        return b.labels * self.vocab * LOSS_BYTES + whole


def _meta_model(cfg: Config, path: Path, adapter: Any, total_steps: int, gpu: GpuSpec | None) -> _Model:
    dtype = torch.bfloat16 if gpu is not None else torch.float32
    meta = build_on_meta(path, adapter, total_steps=total_steps, dtype=dtype, trust_remote_code=cfg.model.trust_remote_code)
    hidden, vocab, head_trained = head_cost(meta)
    return _Model(count_parameters(meta), step_cost(meta), hidden, vocab, head_trained)


def _memory(model: _Model, batches: Sequence[Batch], method: str, gpu: GpuSpec | None,
            baseline_gib: float) -> dict[str, float]:
    """Peak memory by part, in GiB, for a run whose micro-batches are ``batches``."""
    c = model.counts
    frozen = c.total - c.trainable
    if method == "qlora":
        weights = c.frozen_linear * NF4_WEIGHT_BYTES + (frozen - c.frozen_linear) * 4
    else:
        weights = frozen * (GPU_WEIGHT_BYTES if gpu is not None else CPU_WEIGHT_BYTES)
    activations = max(model.activation_bytes(b) for b in batches)
    parts = {"frozen weights": weights / GIB,
             **{f"trainable {k}" if k == "weights" else k: c.trainable * v / GIB for k, v in TRAINABLE_BYTES.items()},
             "activations (largest batch)": activations / GIB,
             "loss logits (largest batch)": max(model.loss_bytes(b) for b in batches) / GIB}
    if gpu is None:
        parts["allocator reuse (CPU)"] = activations * (CPU_ALLOCATOR_FACTOR - 1) / GIB
        parts["process baseline (python, libraries, data)"] = baseline_gib
    else:
        parts["CUDA context and workspaces"] = CUDA_CONTEXT_GIB
    return {k: round(v, 3) for k, v in parts.items()}


#: The memory parts that grow with the batch; the rest (weights, optimiser, the process) does not.
_BATCH_PARTS = ("activations (largest batch)", "loss logits (largest batch)", "allocator reuse (CPU)")


def _measured_memory(model: _Model, memory: dict[str, float], calibration: dict[str, Any], method: str,
                     baseline_gib: float) -> tuple[dict[str, float], str]:
    """The memory parts with the batch-dependent ones scaled by what the calibration measured, and what it rests on.

    The calibration steps ran the real loop in this process, so their peak resident memory is a
    measurement of what the model predicts for a batch of their shape. The activation model is
    traced for PEFT's layers in fp32, an upper bound: the fast path keeps far less per token (bf16
    copies, packed rows, recomputed masks). So the batch-dependent parts are scaled by the measured
    over the predicted share of a batch of the calibration's shape, and that factor carries over to
    the run's largest batch.
    """
    cal_batch = Batch(**calibration["batch"])
    predicted = _memory(model, [cal_batch], method, None, baseline_gib)
    fixed = sum(v for k, v in predicted.items() if k not in _BATCH_PARTS)
    batch_predicted = sum(v for k, v in predicted.items() if k in _BATCH_PARTS)
    measured = calibration["peak_rss_mib"] / 1024
    factor = max(measured - fixed, 0.0) / batch_predicted if batch_predicted > 0 else 1.0
    line = (f"memory correction: the calibration steps ({cal_batch.rows} x {cal_batch.width} tokens) peaked at "
            f"{measured:.2f} GiB against {sum(predicted.values()):.2f} GiB predicted; the parts that grow with the "
            f"batch are scaled by the measured factor {factor:.3f}")
    return {k: round(v * factor, 3) if k in _BATCH_PARTS else v for k, v in memory.items()}, line


def _sig(x: float) -> float:
    """``x`` to four significant digits: estimates span microseconds (GPU steps) to days."""
    return float(f"{x:.4g}")


def _with_batch(cfg: Config, batch_size: int, grad_accum: int) -> Config:
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"batch_size": batch_size, "grad_accum": grad_accum})})


def _suggestions(cfg: Config, path: Path, model: _Model, train: Sequence[Encoded], total_steps: int,
                 gpu: GpuSpec | None, baseline_gib: float, total_gib: float, limit_gib: float) -> list[str]:
    """Changes that make the run fit, each checked with the same estimate."""
    out: list[str] = []
    bs, accum, method = cfg.train.batch_size, cfg.train.grad_accum, cfg.adapter.method
    b = bs // 2
    while b >= 1:
        smaller = _with_batch(cfg, b, accum * bs // b)
        batches = _run_batches(train, smaller, 1, _layout(cfg, gpu, model))[0]
        total = sum(_memory(model, batches, method, gpu, baseline_gib).values())
        if total <= limit_gib:
            out.append(f"--set train.batch_size={b} --set train.grad_accum={accum * bs // b} (same effective batch; "
                       f"about {total:.1f} GiB)")
            break
        b //= 2
    if gpu is not None and method in ("lora", "dora", "rslora", "adalora"):
        qcfg = cfg.adapter.model_copy(update={"method": "qlora", "options": {}})
        qmodel = _meta_model(cfg, path, qcfg, total_steps, gpu)
        total = sum(_memory(qmodel, _run_batches(train, cfg, 1)[0], "qlora", gpu, baseline_gib).values())
        out.append(f"--set adapter.method=qlora (4-bit base, gradient checkpointing): about {total:.1f} GiB"
                   + ("" if total <= limit_gib else ", still too much"))
    if gpu is None:
        out.append("plan it for a GPU: tunesmith plan --gpu H100-80GB (see --help for the list)")
    else:
        larger = [g.name for g in GPUS.values() if g.memory_gib >= total_gib]
        out.append(f"as configured it fits on: {', '.join(larger)}" if larger else "as configured it fits on none of "
                   "the GPUs tunesmith knows")
    return out


def _gpu_seconds(model: _Model, b: Batch, gpu: GpuSpec, weight_bytes: float, train: bool) -> float:
    flops = model.step_flops(b) if train else model.eval_flops(b)
    compute = flops / (gpu.peak_tflops * 1e12 * GPU_MFU)
    # Each pass reads every weight once: forward, and backward for the input gradients.
    memory = weight_bytes * (2 if train else 1) / (gpu.bandwidth_gbs * 1e9)
    launches = (model.cost.operations if train else model.cost.forward_operations) * GPU_OP_SECONDS
    return max(compute, memory, launches)


def plan_training(cfg: Config, base_dir: Path, *, gpu: str | None = None, measure: bool = True,
                  calibration_steps: int = 4) -> dict[str, Any]:
    """Estimate a run's parameters, peak memory and time, on this machine or on a named GPU.

    Args:
        cfg: The validated project config.
        base_dir: The folder relative paths in the config are resolved against.
        gpu: A GPU name from :data:`tunesmith.plan.hardware.GPUS`; None plans for this machine.
        measure: On this machine, time ``calibration_steps`` real training steps (the first a warm-up)
            when the run fits in memory; otherwise the time comes from FLOPs at a measured matmul speed.
        calibration_steps: Real steps to run, warm-up included.

    Returns:
        The plan as plain data (see the README's "Plan before you spend").

    Raises:
        UserError: An unknown GPU, a method that cannot run on the target, or bad data or model.
    """
    spec = gpu_spec(gpu) if gpu is not None else None
    check_adapter(cfg.adapter, cuda_available=True if spec is not None else None)
    method = get_method(cfg.adapter.method)
    path = base_path(cfg)
    splits = prepare_data(cfg, base_dir, path)
    tokenizer = load_tokenizer(path, cfg.model.trust_remote_code)
    train = [encode_example(tokenizer, ex, splits.system_prompt, cfg.model.max_seq_len) for ex in splits.train]
    val = [encode_example(tokenizer, ex, splits.system_prompt, cfg.model.max_seq_len) for ex in splits.validation]
    if not train:
        raise DataError("the training split is empty: there is nothing to plan")
    baseline_gib = current_rss_mib() / 1024  # a run holds the same libraries and data when its model loads
    total_steps, steps_per_epoch = plan_steps(len(train), cfg.train)
    model = _meta_model(cfg, path, cfg.adapter, total_steps, spec)
    layout = _layout(cfg, spec, model)
    epoch_batches, run_batches = _run_batches(train, cfg, total_steps, layout)
    memory = _memory(model, run_batches, cfg.adapter.method, spec, baseline_gib)
    total_gib = round(sum(memory.values()), 3)
    mem_info = meminfo_gib() if spec is None else None
    limit_gib = spec.memory_gib if spec is not None else mem_info["total"]
    fits = total_gib <= limit_gib
    largest = max(run_batches, key=model.activation_bytes)
    eval_batches = _eval_batches(val, cfg.train.batch_size)
    validations = _validations(total_steps, steps_per_epoch, cfg.train.eval_every) if val else 0
    basis = [f"data: {len(train)} training examples encoded as training encodes them, in batches of "
             f"{cfg.train.batch_size} in the random order training takes",
             f"activations: what autograd keeps, traced for this model and method on the meta device (fused "
             f"attention), for the largest batch ({largest.rows} x {largest.width} tokens)"]
    if model.cost.checkpointing:
        basis.append("gradient checkpointing: each block's input is kept and one block's activations are rebuilt "
                     "at a time, at the cost of a second forward pass")
    calibration: dict[str, Any] | None = None
    if spec is not None:
        per_batch, eval_s, lines = _gpu_times(model, memory, spec, eval_batches, cfg.adapter.method)
    else:
        train_rate, eval_rate, how, calibration = _cpu_rates(cfg, path, method, model, train, epoch_batches,
                                                             total_steps, measure and fits, calibration_steps, layout)
        if calibration is not None:
            memory, correction = _measured_memory(model, memory, calibration, cfg.adapter.method, baseline_gib)
            total_gib = round(sum(memory.values()), 3)
            fits = total_gib <= limit_gib
            basis.append(correction)

        def per_batch(b: Batch) -> float:
            return model.step_flops(b) / train_rate

        eval_s = sum(model.eval_flops(b) for b in eval_batches) / eval_rate
        lines = [how + ("" if fits or not measure else "; not measured: the run does not fit"),
                 "memory: fp32 weights as tunesmith loads them on the CPU, gradients and AdamW moments of the "
                 "trained parameters, the process's resident memory before the model loads (measured), and "
                 f"{CPU_ALLOCATOR_FACTOR:g}x the largest batch's activations for blocks the allocator keeps"]
        if choose_precision(cfg.model.precision, torch.device("cpu")) is not None:
            lines.append("bf16 autocast on this CPU: activations are counted in fp32, an upper bound")
    basis += lines
    train_s = [per_batch(b) for b in run_batches]
    epoch_s = [per_batch(b) for b in epoch_batches]
    basis.append("early stopping may end the run sooner; the plan assumes every step runs")

    steady_seconds = sum(train_s)
    first_extra = 0.0
    if calibration is not None:
        # The run's first step pays for first-touch memory as the calibration's warm-up step did.
        first_extra = max(0.0, calibration["warmup_seconds"] - per_batch(Batch(**calibration["batch"])))
        basis.append(f"time: the first step's extra cost, measured on the warm-up step ({first_extra:.1f} s), is added once")
    # Per step and per epoch are the steady rate, so that s/step x steps/epoch gives s/epoch; the first
    # step's one-off cost is its own figure, added once to the run's training time.
    training_seconds = steady_seconds + first_extra
    run_tokens = sum(b.tokens for b in run_batches)
    plan: dict[str, Any] = {
        "model": cfg.model.base, "method": cfg.adapter.method,
        "target": spec.as_dict() if spec is not None else {"name": "this machine (CPU)", "memory_gib": limit_gib,
                                                           "available_gib": mem_info["available"],
                                                           "threads": cfg.train.threads or torch.get_num_threads()},
        "parameters": {"total": model.counts.total, "trainable": model.counts.trainable,
                       "trainable_percent": round(100 * model.counts.trainable / model.counts.total, 4)},
        "memory": {"parts_gib": memory, "total_gib": total_gib, "limit_gib": limit_gib, "fits": fits,
                   "largest_batch": {"rows": largest.rows, "width": largest.width}},
        "data": {"train_examples": len(train), "validation_examples": len(val), "batch_size": cfg.train.batch_size,
                 "grad_accum": cfg.train.grad_accum, "tokens_per_epoch": sum(b.tokens for b in epoch_batches),
                 "padded_tokens_per_epoch": sum(b.rows * b.width for b in epoch_batches),
                 "computed_tokens_per_epoch": sum(b.tokens if b.computed is None else b.computed for b in epoch_batches),
                 "packed": layout.packs, "prefix_shared": layout.shares_prefix,
                 "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
                 "epochs": round(total_steps / steps_per_epoch, 4), "run_tokens": run_tokens,
                 "run_computed_tokens": sum(b.tokens if b.computed is None else b.computed for b in run_batches)},
        "time": {"tokens_per_second": _sig(run_tokens / training_seconds) if training_seconds else None,
                 "seconds_per_step": _sig(steady_seconds / total_steps), "seconds_per_epoch": _sig(sum(epoch_s)),
                 "first_step_extra_seconds": _sig(first_extra),
                 "training_seconds": _sig(training_seconds), "validations": validations,
                 "validation_seconds": _sig(validations * eval_s),
                 "total_seconds": _sig(training_seconds + validations * eval_s)},
        "basis": basis,
        "calibration": calibration,
        "suggestions": [] if fits else _suggestions(cfg, path, model, train, total_steps, spec, baseline_gib,
                                                               total_gib, limit_gib),
    }
    if spec is None and fits and total_gib > mem_info["available"]:
        plan["suggestions"].append(f"only {mem_info['available']:.1f} GiB are free now: other processes hold the rest")
    return plan


def _gpu_times(model: _Model, memory: dict[str, float], gpu: GpuSpec, eval_batches: Sequence[Batch],
               method: str) -> tuple[Callable[[Batch], float], float, list[str]]:
    """(seconds of a training micro-batch as a function of it, seconds of one validation pass, what they rest on)."""
    weight_bytes = memory["frozen weights"] * GIB
    eval_s = sum(_gpu_seconds(model, b, gpu, weight_bytes, False) for b in eval_batches)
    lines = [f"time: FLOPs at an assumed {GPU_MFU:.0%} of the {gpu.name}'s dense {'bf16' if gpu.bf16_tflops else 'fp16'} "
             f"peak ({gpu.peak_tflops:g} TFLOP/s), or its memory bandwidth ({gpu.bandwidth_gbs:g} GB/s), or "
             f"{GPU_OP_SECONDS * 1e6:g} us per launched operation ({model.cost.operations:,} per micro-batch), "
             "whichever is slowest",
             f"memory: bf16 weights{' (NF4 4-bit for linear layers)' if method == 'qlora' else ''}, trained "
             f"parameters as fp32 with fp32 gradients and AdamW moments, {CUDA_CONTEXT_GIB:g} GiB assumed for the "
             "CUDA context"]
    return (lambda b: _gpu_seconds(model, b, gpu, weight_bytes, True)), eval_s, lines


def _cpu_rates(cfg: Config, path: Path, method: Any, model: _Model, train: Sequence[Encoded],
               epoch_batches: Sequence[Batch], total_steps: int, measure: bool,
               steps: int, layout: BatchLayout) -> tuple[float, float, str, dict[str, Any] | None]:
    """(training FLOP/s, validation FLOP/s, what they rest on, the calibration's measurements or None)."""
    bs = cfg.train.batch_size
    steps = min(steps, len(train) // bs)
    if not measure or steps < 2:
        dtype = choose_precision(cfg.model.precision, torch.device("cpu")) or torch.float32
        gflops = matmul_gflops(dtype=dtype)
        rate = gflops * 1e9 * CPU_EFFICIENCY[dtype]
        name = "bf16" if dtype == torch.bfloat16 else "fp32"
        return rate, rate, (f"time: FLOPs at an assumed {CPU_EFFICIENCY[dtype]:.0%} of this CPU's measured {name} matmul "
                            f"speed ({gflops:.0f} GFLOP/s)"), None
    # Calibrate at the width most of the run's batches have.
    width = int(statistics.median(b.width for b in epoch_batches))
    examples = representative(train, width, steps * bs)
    console.print(f"Timing {steps} training steps of {bs} examples x ~{width} tokens on this machine")
    lm = load_base_model(path, cfg.model.precision, cfg.model.trust_remote_code, device=torch.device("cpu"))
    torch.manual_seed(cfg.project.seed)
    lm.model = apply_adapter(lm.model, cfg.adapter, BuildContext(total_steps=total_steps, model_path=path))
    cal = calibrate(lm, examples, cfg.train, method, steps=steps, seed=cfg.project.seed)
    # The timed steps' batches as the loop formed them (its order, its layout), the warm-up step's left out.
    timed = _run_batches(examples, _with_batch(cfg, bs, 1), steps, layout)[1][1:]
    train_rate = sum(model.step_flops(b) for b in timed) / sum(cal.seconds)
    first = examples[:bs]
    eval_batch = Batch(bs, max(len(e.input_ids) for e in first), cal.eval_tokens, sum(e.n_completion for e in first))
    # The matmul speed right after, so the share of it a training step reaches can be seen (and CPU_EFFICIENCY checked).
    gflops = matmul_gflops(dtype=choose_precision(cfg.model.precision, torch.device("cpu")) or torch.float32)
    summary = {**cal.summary(), "batch": asdict(max(timed, key=model.activation_bytes)),
               "step_gflops": round(train_rate / 1e9, 2), "matmul_gflops": round(gflops, 1),
               "share_of_matmul_speed": round(train_rate / 1e9 / gflops, 3)}
    basis = (f"time: {len(cal.seconds)} real training steps of {bs} examples x ~{width} tokens timed on this machine "
             f"after a warm-up step ({summary['tokens_per_second']} tokens/s), scaled to every batch of the run by "
             "its FLOPs")
    return train_rate, model.eval_flops(eval_batch) / cal.eval_seconds, basis, summary


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms"
    if seconds < 90:
        return f"{seconds:.3g} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def plan_tables(plan: dict[str, Any]) -> list[Table]:
    """The plan as tables: what is trained, memory by part, and time."""
    p, m, d, t = plan["parameters"], plan["memory"], plan["data"], plan["time"]
    head = Table(title=f"Plan: {plan['model']} with {plan['method']} on {plan['target']['name']}", show_header=False)
    head.add_column("what")
    head.add_column("value", justify="right")
    head.add_row("trainable parameters", f"{p['trainable']:,} ({p['trainable_percent']:.3g}% of {p['total']:,})")
    head.add_row("training examples, batch x accumulation", f"{d['train_examples']:,}, {d['batch_size']} x {d['grad_accum']}")
    if d.get("packed"):
        shared = ", the opening a batch shares once" if d.get("prefix_shared") else ""
        head.add_row(f"tokens per epoch (computed: packed{shared})",
                     f"{d['tokens_per_epoch']:,} ({d['computed_tokens_per_epoch']:,})")
    else:
        head.add_row("tokens per epoch (padded)", f"{d['tokens_per_epoch']:,} ({d['padded_tokens_per_epoch']:,})")
    head.add_row("steps per epoch, steps in the run", f"{d['steps_per_epoch']:,}, {d['total_steps']:,} ({d['epochs']:g} epochs)")
    head.add_row("time per step (average)", _duration(t["seconds_per_step"]))
    head.add_row("time per epoch", _duration(t["seconds_per_epoch"]))
    if t.get("first_step_extra_seconds"):
        head.add_row("one-off cost of the first step", _duration(t["first_step_extra_seconds"]))
    head.add_row(f"training + {t['validations']} validation{'' if t['validations'] == 1 else 's'}",
                 f"{_duration(t['training_seconds'])} + "
                 f"{_duration(t['validation_seconds'])} = {_duration(t['total_seconds'])}")
    head.add_row("throughput", f"{t['tokens_per_second']:,.0f} tokens/s" if t["tokens_per_second"] else "-")
    mem = Table(title="Peak memory")
    mem.add_column("part")
    mem.add_column("GiB", justify="right")
    for name, gib in m["parts_gib"].items():
        mem.add_row(name, f"{gib:.2f}")
    verdict = "fits" if m["fits"] else "does NOT fit"
    mem.add_row(f"total ({verdict} in {m['limit_gib']:g} GiB)", f"{m['total_gib']:.2f}", style="bold")
    return [head, mem]
