"""The versions of the software a run depends on, recorded in every run folder and report."""

from __future__ import annotations

import platform
from importlib import metadata

#: The distributions whose versions change what a run computes.
RECORDED = ("tunesmith", "torch", "transformers", "peft", "accelerate", "tokenizers", "safetensors")


def library_versions() -> dict[str, str | None]:
    """Python's version and each of :data:`RECORDED`'s installed versions (None where one is not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in RECORDED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
