"""The fused LoRA layer computes what PEFT's LoRA layer computes, forward and backward, and steps aside where it does not apply."""

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tests.conftest import build_tiny_model
from tunesmith.config import AdapterConfig
from tunesmith.models.adapters import apply_adapter
from tunesmith.fastpath.dropout import use_fast_dropout
from tunesmith.fastpath.lora import use_fused_lora
from tunesmith.models.precision import cast_once


def _pair(model, method="lora", dropout=0.0):
    """A PEFT model with non-zero adapter weights, and a copy of it routed through the fused layer."""
    ref = apply_adapter(model, AdapterConfig(method=method, dropout=dropout))
    use_fast_dropout(ref)  # PEFT's layers with the seeded masks the fused layer draws
    torch.manual_seed(1)
    for name, p in ref.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    fused = copy.deepcopy(ref)
    return ref, fused, use_fused_lora(fused)


def _run(model, ids, autocast=False, seed=5):
    """Logits and the gradients of every trainable weight, with dropout drawn from ``seed``."""
    model.zero_grad()
    model.train()
    torch.manual_seed(seed)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(input_ids=ids).logits
    logits.float().pow(2).mean().backward()
    return logits.detach().float(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_fp32_forward_and_gradients_equal_peft(tiny_tokenizer, dropout):
    # With dropout, both draw the same masks from the same generator state, so they must agree exactly too.
    ref, fused, count = _pair(build_tiny_model(tiny_tokenizer), dropout=dropout)
    assert count == 14  # two blocks, seven linear layers each
    ids = torch.randint(0, len(tiny_tokenizer), (3, 17))
    (y0, g0), (y1, g1) = _run(ref, ids), _run(fused, ids)
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-5)
    assert g0.keys() == g1.keys() and len(g0) == 28
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-4, atol=1e-6, msg=name)


def _llama(tokenizer):
    # The usual 0.02 initialisation: bf16 rounding then perturbs the result as little as in a real model.
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                        tie_word_embeddings=True))


def test_bf16_autocast_is_as_close_to_fp32_as_peft_under_autocast(tiny_tokenizer):
    ref, fused, _ = _pair(_llama(tiny_tokenizer))
    ids = torch.randint(0, len(tiny_tokenizer), (4, 33))
    y, g = _run(ref, ids)
    y_peft, g_peft = _run(ref, ids, autocast=True)
    y_fused, g_fused = _run(fused, ids, autocast=True)
    assert _rel(y_fused, y) < 0.02
    assert _rel(y_fused, y) < 2 * _rel(y_peft, y) + 1e-3
    for name in g:
        assert _rel(g_fused[name], g[name]) < max(0.05, 2 * _rel(g_peft[name], g[name])), name


def test_eval_mode_drops_nothing(tiny_tokenizer):
    ref, fused, _ = _pair(build_tiny_model(tiny_tokenizer), dropout=0.5)
    ids = torch.randint(0, len(tiny_tokenizer), (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(fused.eval()(input_ids=ids).logits, ref.eval()(input_ids=ids).logits)


@pytest.mark.parametrize("method", ["dora", "rslora"])
def test_other_lora_kinds_give_peft_results(tiny_tokenizer, method):
    # DoRA is a PEFT variant (its own forward is kept); rsLoRA only changes the scaling, which the fused layer reads.
    ref, fused, served = _pair(build_tiny_model(tiny_tokenizer), method=method)
    assert served == (0 if method == "dora" else 14)
    ids = torch.randint(0, len(tiny_tokenizer), (2, 11))
    (y0, g0), (y1, g1) = _run(ref, ids), _run(fused, ids)
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-5)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-4, atol=1e-6)


def test_merged_and_disabled_adapters_fall_back(tiny_tokenizer):
    ref, fused, _ = _pair(build_tiny_model(tiny_tokenizer))
    ids = torch.randint(0, len(tiny_tokenizer), (2, 7))
    with torch.no_grad():
        with fused.disable_adapter(), ref.disable_adapter():
            torch.testing.assert_close(fused(input_ids=ids).logits, ref(input_ids=ids).logits)
        expected = ref(input_ids=ids).logits
        merged = fused.eval().merge_and_unload()
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-5)


def test_a_shared_input_is_cast_once_until_it_changes():
    x = torch.randn(4, 8)
    first = cast_once(x, torch.bfloat16)
    assert cast_once(x, torch.bfloat16) is first  # q, k and v read the same input: one copy
    x.add_(1.0)  # an in-place change makes the cached copy stale
    again = cast_once(x, torch.bfloat16)
    assert again is not first and torch.equal(again, x.to(torch.bfloat16))
    assert cast_once(torch.randn(4, 8), torch.bfloat16) is not again
    same_dtype = torch.randn(3, 3, dtype=torch.bfloat16)
    assert cast_once(same_dtype, torch.bfloat16).data_ptr() == same_dtype.data_ptr()
