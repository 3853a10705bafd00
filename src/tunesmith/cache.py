"""tunesmith's cache folder: converted model checkpoints, compiled kernels, and the list of known runs folders."""

from __future__ import annotations

import os
from pathlib import Path

#: Set it to move the cache.
CACHE_ENV = "TUNESMITH_CACHE"


def cache_root() -> Path:
    """The cache folder: ``$TUNESMITH_CACHE`` or ``~/.cache/tunesmith``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tunesmith"
