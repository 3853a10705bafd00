"""tunesmith's C kernels (``kernels.c``): compiled once per machine, loaded with ctypes.

The source ships inside the package. On first use it is compiled with the system's C compiler
(``$CC`` or ``cc``) for this CPU (``-O3 -march=native``) into the cache folder
(``$TUNESMITH_CACHE/kernels``; about a second), under a name derived from the source, the compiler and the CPU's
flags, so a changed source, compiler or machine gets its own build. Where there is no compiler or
the build fails, :func:`library` returns None with a warning and callers use their PyTorch
reference implementation, which computes the same results more slowly. ``TUNESMITH_NO_NATIVE=1``
turns the kernels off.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

from tunesmith.cache import cache_root

SOURCE = Path(__file__).with_name("kernels.c")
# -ffast-math lets the compiler use the C library's vectorised expf (glibc declares it only then); the
# kernels take no infinities or NaNs they must keep, and sums in another order are within rounding.
# -fopenmp: the kernels' loops share PyTorch's OpenMP threads (see kernels.c); a compiler without
# OpenMP builds them single-threaded.
FLAGS = ("-O3", "-march=native", "-ffast-math", "-shared", "-fPIC", "-std=c99", "-fopenmp")
LIBS = ("-lm",)
DISABLE_ENV = "TUNESMITH_NO_NATIVE"

# name: (return type, argument types)
_SIGNATURES = {
    "tunesmith_keep16": (None, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64, ctypes.c_int32]),
    "tunesmith_keep32": (None, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64, ctypes.c_int32]),
    "tunesmith_causal_softmax_bf16": (None, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                             ctypes.c_float]),
    "tunesmith_causal_softmax_backward_bf16": (None, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                                      ctypes.c_int64, ctypes.c_float]),
    "tunesmith_swiglu_bf16": (None, [ctypes.c_void_p] * 3 + [ctypes.c_int64]),
    "tunesmith_swiglu_backward_bf16": (None, [ctypes.c_void_p] * 5 + [ctypes.c_int64]),
    "tunesmith_rms_norm": (None, [ctypes.c_void_p] * 5 + [ctypes.c_int64, ctypes.c_int64, ctypes.c_float]),
    "tunesmith_rms_norm_backward": (None, [ctypes.c_void_p] * 5 + [ctypes.c_int64, ctypes.c_int64]),
    "tunesmith_rotary_bf16": (None, [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 3 + [ctypes.c_int32]),
}


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _build(compiler: str) -> Path:
    """Compile :data:`SOURCE` into the cache (once) and return the shared library's path.

    Raises:
        OSError: The compiler failed; its output is in the message.
    """
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), version, " ".join(FLAGS), platform.machine(),
                                    _cpu_flags()]).encode()).hexdigest()[:16]
    folder = cache_root() / "kernels"
    target = folder / f"tunesmith-{key}.so"
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    # Built under a temporary name and renamed, so concurrent processes never load a partial file.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
    os.close(fd)
    try:
        for flags in (FLAGS, tuple(f for f in FLAGS if f != "-fopenmp")):  # a compiler without OpenMP
            res = subprocess.run([compiler, *flags, str(SOURCE), "-o", tmp, *LIBS], capture_output=True, text=True)
            if res.returncode == 0:
                break
        if res.returncode != 0:
            raise OSError(f"{compiler} could not build {SOURCE.name}:\n{res.stderr.strip()[-2000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


_why_not: list[str] = []  # why library() returned None, once it has


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels, or None where they cannot be had (no compiler, failed build, turned off)."""
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        _why_not.append(f"turned off by {DISABLE_ENV}")
        return None
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        _why_not.append("no C compiler (cc or $CC) found")
        warnings.warn("no C compiler (cc or $CC) found: tunesmith's CPU kernels are off and training uses "
                      "slower PyTorch operators instead", stacklevel=2)
        return None
    try:
        lib = ctypes.CDLL(str(_build(compiler)))
    except OSError as err:
        _why_not.append(f"the build failed: {str(err).splitlines()[0]}")
        warnings.warn(f"tunesmith's CPU kernels are off ({err}); training uses slower PyTorch operators instead",
                      stacklevel=2)
        return None
    for name, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


def unavailable_reason() -> str | None:
    """Why :func:`library` gives None (no compiler, a failed build, turned off), or None when the kernels load."""
    if library() is not None:
        return None
    return _why_not[-1] if _why_not else "not built"
