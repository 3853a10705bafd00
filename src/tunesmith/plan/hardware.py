"""What the planner knows about machines: a table of GPUs and this machine's memory (no torch: the CLI imports it at once)."""

from __future__ import annotations

import resource
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError


@dataclass(frozen=True)
class GpuSpec:
    """One GPU model, from its vendor's data sheet (SXM variants where there are several).

    Attributes:
        name: The name given to ``--gpu``.
        memory_gib: Memory as the driver reports it (``nvidia-smi``), in GiB.
        bf16_tflops: Dense bf16 tensor-core peak in TFLOP/s, or None without bf16 tensor cores.
        fp16_tflops: Dense fp16 tensor-core peak in TFLOP/s (what tunesmith falls back to without bf16).
        bandwidth_gbs: Memory bandwidth in GB/s.
    """

    name: str
    memory_gib: float
    bf16_tflops: float | None
    fp16_tflops: float
    bandwidth_gbs: float

    @property
    def peak_tflops(self) -> float:
        """The tensor-core peak training runs at: bf16 where the GPU has it, else fp16."""
        return self.bf16_tflops if self.bf16_tflops is not None else self.fp16_tflops

    def as_dict(self) -> dict[str, Any]:
        """The spec as plain data."""
        return asdict(self)


GPUS: dict[str, GpuSpec] = {g.name: g for g in (
    GpuSpec("H200-141GB", 140.4, 989.0, 989.0, 4800.0),
    GpuSpec("H100-80GB", 79.6, 989.0, 989.0, 3350.0),
    GpuSpec("A100-80GB", 80.0, 312.0, 312.0, 2039.0),
    GpuSpec("A100-40GB", 40.0, 312.0, 312.0, 1555.0),
    GpuSpec("L40S-48GB", 45.0, 362.0, 362.0, 864.0),
    GpuSpec("A10G-24GB", 22.5, 70.0, 70.0, 600.0),
    GpuSpec("L4-24GB", 22.5, 121.0, 121.0, 300.0),
    GpuSpec("RTX4090-24GB", 24.0, 165.2, 165.2, 1008.0),
    GpuSpec("RTX3090-24GB", 24.0, 71.0, 71.0, 936.0),
    GpuSpec("V100-16GB", 16.0, None, 125.0, 900.0),
    GpuSpec("T4-16GB", 15.0, None, 65.0, 320.0),
)}


def gpu_spec(name: str) -> GpuSpec:
    """The GPU called ``name`` (case and separators ignored: ``h100``, ``H100-80GB`` and ``h100_80gb`` all match).

    Raises:
        UserError: No GPU of that name, with the list of known ones.
    """
    def key(s: str) -> str:
        return "".join(ch for ch in s.lower() if ch.isalnum())

    wanted = key(name)
    exact = [g for g in GPUS.values() if key(g.name) == wanted]
    # A bare model name is enough when only one memory size of it is known (h100, but not a100).
    prefix = [g for g in GPUS.values() if key(g.name).startswith(wanted)] if wanted else []
    found = exact or (prefix if len(prefix) == 1 else [])
    if not found:
        raise UserError(f"--gpu: unknown GPU {name!r}; known: {', '.join(GPUS)}")
    return found[0]


def meminfo_gib() -> dict[str, float]:
    """This machine's ``MemTotal`` and ``MemAvailable`` from ``/proc/meminfo``, in GiB.

    Raises:
        UserError: ``/proc/meminfo`` cannot be read (not Linux).
    """
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError as exc:
        raise UserError(f"cannot read this machine's memory from /proc/meminfo ({exc}); plan for a named --gpu") from exc
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "MemAvailable"):
            values[key] = int(rest.split()[0]) / 2**20  # kB -> GiB
    return {"total": round(values.get("MemTotal", 0.0), 2), "available": round(values.get("MemAvailable", 0.0), 2)}


def current_rss_mib() -> float:
    """Resident memory of this process now, in MiB (``/proc/self/statm``)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20
