"""The causal attention fast path equals transformers' SDPA attention, and hands every other case to it."""

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from tests.conftest import build_tiny_model
from tunesmith.fastpath.attention import (MAX_LENGTH, NAME, Packing, _softmax, _softmax_backward, causal_attention,
                                            packed, use_fast_attention)
from tunesmith.fastpath.native import library


class _Attn(torch.nn.Module):
    is_causal = True

    def __init__(self, groups):
        super().__init__()
        self.num_key_value_groups = groups


def _qkv(batch=2, heads=6, kv_heads=2, length=13, dim=8, seed=0):
    torch.manual_seed(seed)
    q = torch.randn(batch, heads, length, dim, requires_grad=True)
    k = torch.randn(batch, kv_heads, length, dim, requires_grad=True)
    v = torch.randn(batch, kv_heads, length, dim, requires_grad=True)
    return q, k, v


@pytest.mark.parametrize("heads,kv_heads", [(6, 2), (4, 4), (3, 1)])
def test_output_and_gradients_equal_sdpa(heads, kv_heads):
    module = _Attn(heads // kv_heads)
    results = []
    for fn in (sdpa_attention_forward, causal_attention):
        q, k, v = _qkv(heads=heads, kv_heads=kv_heads)
        out, weights = fn(module, q, k, v, None, scaling=0.3)
        assert weights is None and out.shape == (2, 13, heads, 8)
        out.pow(2).sum().backward()
        results.append((out.detach(), q.grad, k.grad, v.grad))
    for fast, reference in zip(results[1], results[0]):
        torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)


def test_masks_long_sequences_and_cached_decoding_go_to_sdpa():
    module = _Attn(3)
    q, k, v = _qkv()
    mask = torch.ones(2, 1, 13, 13, dtype=torch.bool).tril()
    mask[0, :, :, :3] = False  # left padding: only SDPA's masked path handles it
    torch.testing.assert_close(causal_attention(module, q, k, v, mask)[0], sdpa_attention_forward(module, q, k, v, mask)[0])
    q1 = q[:, :, -1:]  # one new token against a cache of 13
    torch.testing.assert_close(causal_attention(module, q1, k, v, None)[0], sdpa_attention_forward(module, q1, k, v, None)[0])
    q, k, v = _qkv(length=MAX_LENGTH + 1)
    torch.testing.assert_close(causal_attention(module, q, k, v, None)[0], sdpa_attention_forward(module, q, k, v, None)[0])


def test_model_switches_and_keeps_its_outputs(tiny_tokenizer):
    model = build_tiny_model(tiny_tokenizer)
    ids = torch.randint(0, len(tiny_tokenizer), (3, 20))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        assert use_fast_attention(model) and model.config._attn_implementation == NAME
        after = model(input_ids=ids).logits
        generated = model.generate(ids[:, :5], max_new_tokens=4, do_sample=False)  # cached decoding still works
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    assert generated.shape == (3, 9)
    assert use_fast_attention(model) and model.config._attn_implementation == NAME  # a second call: no change
    eager = build_tiny_model(tiny_tokenizer)
    eager.set_attn_implementation("eager")
    assert not use_fast_attention(eager)  # only SDPA models are switched


@pytest.mark.parametrize("prefix,lengths", [(0, [7, 3, 11]), (6, [7, 3, 11]),
                                            # longer than MAX_LENGTH: per example on SDPA's fused kernel
                                            (0, [MAX_LENGTH + 40, 9, MAX_LENGTH + 1]), (6, [MAX_LENGTH + 40, 9]),
                                            # a prefix longer than the examples (a label list) attended once
                                            (MAX_LENGTH + 10, [7, 3, 11])])
def test_packed_row_equals_sdpa_with_the_block_mask(prefix, lengths):
    """Each example attends to itself and the shared prefix; the prefix's gradient sums what every example sends."""
    module = _Attn(3)
    lengths = torch.tensor(lengths)
    results = []
    for fn in (sdpa_attention_forward, causal_attention):
        q, k, v = _qkv(batch=1, heads=6, kv_heads=2, length=prefix + int(lengths.sum()), dim=8)
        if fn is causal_attention:
            with packed(lengths, prefix):
                out, _ = fn(module, q, k, v, None, scaling=0.3)
        else:
            out, _ = fn(module, q, k, v, Packing.of(lengths, prefix).block_mask(), scaling=0.3)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out.detach(), q.grad, k.grad, v.grad))
    for fast, reference in zip(results[1], results[0]):
        torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)


def test_long_packed_rows_never_attend_across_the_whole_row(monkeypatch):
    """The row-by-row mask made a step of 16 x 512 tokens 76 s and 14 GB: long examples attend one by one."""
    monkeypatch.setattr(Packing, "block_mask", lambda self: pytest.fail("the whole row went to SDPA with a block mask"))
    q, k, v = _qkv(batch=1, heads=6, kv_heads=2, length=2 * MAX_LENGTH + 10, dim=8)
    with torch.autocast("cpu", dtype=torch.bfloat16), packed(torch.tensor([MAX_LENGTH + 5, MAX_LENGTH]), 5):
        out, _ = causal_attention(_Attn(3), q, k, v, None, scaling=0.3)
    out.float().sum().backward()
    assert out.shape == (1, 2 * MAX_LENGTH + 10, 6, 8) and q.grad is not None


def test_block_mask_with_a_prefix():
    mask = Packing.of(torch.tensor([2, 1]), prefix=2).block_mask()[0, 0].int().tolist()
    assert mask == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 0, 0, 1]]


@pytest.mark.parametrize("packed_row", [False, True])
def test_bf16_autocast_is_within_bf16_rounding_of_sdpa(packed_row):
    module = _Attn(3)
    lengths = torch.tensor([13, 5, 9])
    results = []
    for fn in (sdpa_attention_forward, causal_attention):
        q, k, v = _qkv(batch=1, heads=6, kv_heads=2, length=27, dim=16)
        mask = Packing.of(lengths).block_mask() if fn is sdpa_attention_forward and packed_row else None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            if fn is causal_attention and packed_row:
                with packed(lengths):
                    out, _ = fn(module, q, k, v, None, scaling=0.25)
            else:
                out, _ = fn(module, q, k, v, mask, scaling=0.25)
        out.float().pow(2).sum().backward()
        results.append((out.float(), q.grad, k.grad, v.grad))
    for fast, reference in zip(results[1], results[0]):
        assert fast.dtype == reference.dtype
        assert ((fast - reference).norm() / reference.norm()) < 0.02


@pytest.mark.parametrize("length", [1, 7, 100])
def test_softmax_kernel_equals_its_pytorch_reference(length):
    torch.manual_seed(length)
    scores = (torch.randn(4, 3 * length, length) * 4).to(torch.bfloat16)
    assert library() is not None  # the project's machines build it
    probs = _softmax(scores, length, 0.125)
    bias = torch.full((length, length), float("-inf")).triu(1)
    reference = (scores.float().view(-1, length, length) * 0.125 + bias).softmax(-1).to(torch.bfloat16)
    assert torch.equal(probs, reference.view_as(scores))
    grad = torch.randn_like(scores)
    p, g = reference.view_as(scores).float(), grad.float()
    expected = (p * (g - (g * p).sum(-1, keepdim=True)) * 0.125).to(torch.bfloat16)
    torch.testing.assert_close(_softmax_backward(probs, grad, length, 0.125), expected, rtol=8e-3, atol=1e-6)


def test_packing_rounds_the_layout_up():
    pack = Packing.of(torch.tensor([5, 17, 3]))
    assert pack.longest == 32 and pack.lengths == (5, 17, 3) and pack.total == 25
    assert pack.gather.numel() == 3 * 32 and pack.scatter.tolist()[:6] == [0, 1, 2, 3, 4, 32]
    shared = Packing.of(torch.tensor([5, 12, 3]), prefix=4)
    assert shared.longest == 16 and shared.total == 24  # the longest example with the prefix: 16
    assert shared.gather.view(3, 16)[1, :6].tolist() == [0, 1, 2, 3, 9, 10]  # the prefix, then its own tokens
    assert shared.scatter.tolist()[:6] == [0, 1, 2, 3, 4, 5] and shared.scatter.tolist()[9] == 16 + 4
