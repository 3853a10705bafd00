"""Building the C kernels: with OpenMP, without it where the compiler has none, and not at all without a compiler."""

import shutil
import stat

import pytest
import torch

from tunesmith.fastpath import native
from tunesmith.fastpath.dropout import keep_mask, threshold


@pytest.fixture
def fresh_build(monkeypatch, tmp_path):
    """A build of its own: an empty cache and no library loaded; the process's library is restored after."""
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    native.library.cache_clear()
    yield tmp_path
    native.library.cache_clear()


def _kernel_works(lib):
    x = torch.randn(1000, dtype=torch.bfloat16)
    out = torch.empty_like(x)
    lib.tunesmith_keep16(x.data_ptr(), out.data_ptr(), x.numel(), 7, threshold(0.05))
    assert torch.equal(out, x * keep_mask(x.shape, 0.05, 7).to(x.dtype))


def test_builds_with_openmp(fresh_build):
    lib = native.library()
    assert lib is not None and b"libgomp" in open(lib._name, "rb").read()  # PyTorch's OpenMP runtime serves it
    _kernel_works(lib)


def test_a_compiler_without_openmp_builds_single_threaded_kernels(fresh_build, monkeypatch):
    cc = shutil.which("cc")
    fake = fresh_build / "cc-no-openmp"
    fake.write_text(f'#!/bin/sh\nfor a in "$@"; do [ "$a" = -fopenmp ] && {{ echo "unsupported: -fopenmp" >&2; exit 1; }}; done\n'
                    f'exec {cc} "$@"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("CC", str(fake))
    lib = native.library()
    assert lib is not None and b"libgomp" not in open(lib._name, "rb").read()
    _kernel_works(lib)


def test_no_compiler_means_no_kernels_and_a_warning(fresh_build, monkeypatch):
    monkeypatch.setenv("CC", str(fresh_build / "no-such-compiler"))
    with pytest.warns(UserWarning, match="no C compiler"):
        assert native.library() is None
