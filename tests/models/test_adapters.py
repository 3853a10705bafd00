"""Every training method in the registry: a few steps lower the loss, and save -> load gives identical outputs.

One row per method; a test checks the table covers the whole registry, so a new method
cannot be registered without its row.
"""

import pytest
import torch

from tests.train.test_training import encode_all, examples
from tunesmith.config import AdapterConfig, TrainConfig
from tunesmith.errors import ConfigError
from tunesmith.models.adapters import (METHODS, BuildContext, apply_adapter, check_adapter, get_method, load_adapter,
                                       merge_adapter, save_adapter)
from tunesmith.models.load import load_base_model
from tunesmith.train.batching import collate
from tunesmith.train.loop import train_adapter
from tunesmith.train.loss import evaluate_loss

CUDA = torch.cuda.is_available()

#: method -> (adapter.options, learning rate, optimiser steps)
ROWS = {
    "lora": ({}, 0.02, 6),
    "dora": ({}, 0.02, 6),
    "rslora": ({}, 0.02, 6),
    "ia3": ({}, 0.05, 6),
    "adalora": ({"init_r": 8}, 0.02, 8),
    "prefix": ({"num_virtual_tokens": 4}, 0.05, 6),
    "prompt": ({"num_virtual_tokens": 4, "init_text": "Classify the message"}, 0.05, 6),
    "freeze": ({"trainable_blocks": 1}, 0.01, 6),
    "full": ({}, 0.005, 6),
    "qlora": ({}, 0.02, 6),
}


def test_every_registered_method_has_a_row():
    assert set(ROWS) == set(METHODS)


def _logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@pytest.mark.parametrize("name", sorted(ROWS))
def test_method_trains_and_reloads_identically(name, tiny_model_dir, tiny_tokenizer, tmp_path):
    if get_method(name).needs_cuda and not CUDA:
        pytest.skip(f"{name} needs CUDA (the check that stops it on a CPU is tested below)")
    options, lr, steps = ROWS[name]
    cfg = AdapterConfig(method=name, r=4, alpha=8, dropout=0.0, options=options)
    check_adapter(cfg)
    lm = load_base_model(tiny_model_dir, "fp32")  # the same numbers on every CPU
    n_total = sum(p.numel() for p in lm.model.parameters())
    torch.manual_seed(0)
    lm.model = apply_adapter(lm.model, cfg, BuildContext(total_steps=steps, model_path=tiny_model_dir))
    trainable = sum(p.numel() for p in lm.model.parameters() if p.requires_grad)
    assert 0 < trainable <= n_total
    train = encode_all(tiny_tokenizer, examples(2))
    pad = tiny_tokenizer.pad_token_id
    before = evaluate_loss(lm.model, train, pad, 16, lm.device, lm.autocast)
    result = train_adapter(lm, train, [], TrainConfig(epochs=20, max_steps=steps, batch_size=12, lr=lr, warmup_ratio=0.0,
                                                      scheduler="constant"), seed=0, method=get_method(name))
    after = evaluate_loss(lm.model, train, pad, 16, lm.device, lm.autocast)
    assert result.steps == steps
    assert after < before - 0.05, f"{name}: loss {before:.3f} -> {after:.3f}"

    save_adapter(lm.model, cfg, tmp_path / "adapter")
    reloaded = load_adapter(load_base_model(tiny_model_dir, "fp32").model, tmp_path / "adapter")
    batch = collate(train[:6], pad)
    trained_logits = _logits(lm.model, batch)
    torch.testing.assert_close(_logits(reloaded, batch), trained_logits, rtol=1e-4, atol=1e-5)
    if get_method(name).mergeable:
        merged = merge_adapter(reloaded, name)
        assert not any("lora_" in n or "ia3_" in n for n, _ in merged.named_parameters())
        torch.testing.assert_close(_logits(merged, batch), trained_logits, rtol=1e-4, atol=1e-4)


def test_qlora_without_cuda_stops_before_work_and_suggests_lora():
    with pytest.raises(ConfigError, match="needs a CUDA GPU.*adapter.method: lora"):
        check_adapter(AdapterConfig(method="qlora"), cuda_available=False)


def test_unknown_method_and_bad_options_are_named():
    with pytest.raises(ConfigError, match="adapter.method: unknown method 'lorax'"):
        check_adapter(AdapterConfig(method="lorax"))
    with pytest.raises(ConfigError, match="adapter.options.num_virtual_token"):
        check_adapter(AdapterConfig(method="prefix", options={"num_virtual_token": 8}))
    with pytest.raises(ConfigError, match="adapter.options.trainable_blocks"):
        check_adapter(AdapterConfig(method="freeze", options={"trainable_blocks": 0}))
    with pytest.raises(ConfigError, match="adapter.options.init_r"):
        check_adapter(AdapterConfig(method="adalora", r=16, options={"init_r": 8}))


def test_freeze_trains_only_the_last_blocks(tiny_model_dir):
    lm = load_base_model(tiny_model_dir)
    model = apply_adapter(lm.model, AdapterConfig(method="freeze", options={"trainable_blocks": 1, "train_head": False}))
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(n.startswith("model.layers.1.") for n in names)
