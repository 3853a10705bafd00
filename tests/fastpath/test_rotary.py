"""The rotary kernels give Llama's rotary embedding, rounded to bf16, and autograd's very gradients."""

import types

import pytest
import torch
from torch import nn
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from tests.conftest import build_tiny_model
from tunesmith.config import AdapterConfig
from tunesmith.fastpath import native
from tunesmith.models.adapters import apply_adapter
from tunesmith.fastpath.rotary import rotary, use_fast_rotary
from tunesmith.fastpath.routing import hub_function, unroute


def _tables(length, dim, batch=1):
    inv = 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))
    positions = torch.stack([torch.arange(length).roll(b) for b in range(batch)]).float()
    freqs = positions[..., None] * inv
    emb = torch.cat([freqs, freqs], -1)
    return emb.cos(), emb.sin()


def _run(fn, batch, tables_batch, heads=6, kv=2, length=23, dim=16):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(batch, length, heads * dim, generator=gen).bfloat16().requires_grad_()
    k = torch.randn(batch, length, kv * dim, generator=gen).bfloat16().requires_grad_()
    cos, sin = _tables(length, dim, tables_batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        # As Llama's attention makes them: views of the projections, heads second.
        qe, ke = fn(q.view(batch, length, heads, dim).transpose(1, 2), k.view(batch, length, kv, dim).transpose(1, 2),
                    cos, sin)
    gq = torch.randn(qe.shape, generator=gen).bfloat16()
    gk = torch.randn(ke.shape, generator=gen).bfloat16()
    torch.autograd.backward([qe, ke], [gq.to(qe.dtype), gk.to(ke.dtype)])
    return qe, ke, q.grad, k.grad


@pytest.mark.parametrize(("batch", "tables_batch"), [(1, 1), (3, 3), (3, 1)])
def test_rotary_equals_llamas_bit_for_bit_in_bf16(batch, tables_batch):
    assert native.library() is not None  # this machine has a C compiler
    fast = _run(rotary, batch, tables_batch)
    reference = _run(apply_rotary_pos_emb, batch, tables_batch)
    assert fast[0].dtype == torch.bfloat16 and reference[0].dtype == torch.float32
    for a, b in zip(fast, reference):
        assert torch.equal(a, b.to(torch.bfloat16))


def test_rotary_is_the_reference_outside_training():
    q, k = torch.randn(1, 2, 5, 8).bfloat16(), torch.randn(1, 2, 5, 8).bfloat16()
    cos, sin = _tables(5, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        qe, ke = rotary(q, k, cos, sin)  # generation: caches keep the reference's dtype
    ref_q, ref_k = apply_rotary_pos_emb(q, k, cos, sin)
    assert qe.dtype == torch.float32 and torch.equal(qe, ref_q) and torch.equal(ke, ref_k)


def test_models_attention_is_routed_and_trains_the_same(tiny_tokenizer):
    ids = torch.randint(0, len(tiny_tokenizer), (2, 12), generator=torch.Generator().manual_seed(0))
    results = []
    for fast in (False, True):
        torch.manual_seed(0)
        model = apply_adapter(build_tiny_model(tiny_tokenizer), AdapterConfig(method="lora", dropout=0.0))
        if fast:
            assert use_fast_rotary(model) == 2 and use_fast_rotary(model) == 2
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        results.append((loss.detach(), [p.grad for p in model.parameters() if p.requires_grad]))
    (loss0, grads0), (loss1, grads1) = results
    assert torch.equal(loss1, loss0)  # attention under autocast reads bf16 either way
    for a, b in zip(grads0, grads1):
        assert torch.equal(a, b)


def _attention_as_in_transformers_4(self, q, k, cos, sin):
    return apply_rotary_pos_emb(q, k, cos, sin)


def test_transformers_4_attention_is_routed_by_its_namespace_and_given_back():
    # transformers 4 (and 5 without the kernels package): the attention's forward calls a plain function.
    plain = hub_function(apply_rotary_pos_emb)
    forward = types.FunctionType(_attention_as_in_transformers_4.__code__, {"apply_rotary_pos_emb": plain})
    module = type("Attention4", (nn.Module,), {"forward": forward})()
    q = torch.randn(1, 2, 5, 8).bfloat16().requires_grad_()
    k = torch.randn(1, 2, 5, 8).bfloat16().requires_grad_()
    cos, sin = _tables(5, 8)

    def out_dtype():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return module(q, k, cos, sin)[0].dtype

    assert out_dtype() == torch.float32  # the reference
    assert use_fast_rotary(module) == 1 and use_fast_rotary(module) == 1
    assert out_dtype() == torch.bfloat16  # the kernels
    assert unroute(module) == 1 and "forward" not in vars(module)
    assert out_dtype() == torch.float32
