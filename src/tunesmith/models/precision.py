"""Choosing the compute precision at run time from what the hardware does fast."""

from __future__ import annotations

import functools
import threading
import weakref
from pathlib import Path

import torch


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX).

    Without them PyTorch emulates bf16 and autocast runs many times slower than fp32.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def choose_precision(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype to use, or None for plain fp32.

    Args:
        setting: ``auto``, ``fp32`` or ``bf16`` (``model.precision``).
        device: Where the model runs.

    Returns:
        ``torch.bfloat16`` when bf16 autocast should be on, else None.
    """
    if setting == "fp32":
        return None
    if setting == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_has_fast_bf16() else None


# id(source) -> (a weak reference to it, its version when cast, the cast); an entry goes with its source.
# The lock keeps look-up and insertion whole when several threads compute (a server's workers).
_casts: dict[int, tuple[weakref.ref[torch.Tensor], int, torch.Tensor]] = {}
_casts_lock = threading.Lock()


def cast_once(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``tensor`` detached and in ``dtype``, cast once and reused while the same tensor is unchanged.

    Serves inputs that several layers read (q, k and v share one, so one bf16 copy is made and
    kept for backward) and frozen weights that must stay in full precision elsewhere (an output
    head tied to the embedding), which autocast would cast anew at every use. An in-place change
    of the source (its version counter) makes a new cast.
    """
    if tensor.dtype == dtype:
        return tensor.detach()
    key = id(tensor)
    with _casts_lock:
        entry = _casts.get(key)
    if entry is not None and entry[0]() is tensor and entry[1] == tensor._version and entry[2].dtype == dtype:
        return entry[2]
    with torch.no_grad():
        cast = tensor.detach().to(dtype)
    remember_cast(tensor, cast)
    return cast


def remember_cast(tensor: torch.Tensor, cast: torch.Tensor) -> None:
    """Make ``cast`` what :func:`cast_once` returns for ``tensor`` in ``cast.dtype`` (one that computed both at once)."""
    key = id(tensor)
    with _casts_lock:
        _casts[key] = (weakref.ref(tensor, lambda _: _casts.pop(key, None)), tensor._version, cast)


def forget_casts() -> None:
    """Drop every cast :func:`cast_once` keeps (the fast path does when training ends)."""
    with _casts_lock:
        _casts.clear()


def inference_weights(model: torch.nn.Module, dtype: torch.dtype | None) -> int:
    """Store the linear layers' weights in ``dtype`` for inference under autocast to ``dtype`` (no-op for None).

    Autocast casts an fp32 weight to bf16 at every call, and it keeps the cast only for weights
    that train; a frozen model (a served base, its adapters) pays the whole model's cast at every
    decoding step, more than the step's own products cost. Stored in bf16, the products are the
    same bf16 products (a test pins the logits), and embeddings and norms stay in fp32 as autocast
    leaves them. An output head tied to the embedding gets a bf16 copy of its own.

    Returns:
        How many weights were converted.
    """
    if dtype is None:
        return 0
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    done = 0
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, torch.nn.Linear) or module.weight.dtype != torch.float32:
                continue
            if id(module.weight) in embeddings:  # tied: the embedding keeps its fp32 weight
                module.weight = torch.nn.Parameter(module.weight.detach().to(dtype), requires_grad=False)
            else:
                module.weight.data = module.weight.data.to(dtype)
            done += 1
    return done
