"""The RMSNorm kernels give Llama's RMSNorm to fp32 rounding, keep less, and hand the bf16 cast on."""

import pytest
import torch
from torch import nn
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from tests.conftest import build_tiny_model
from tunesmith.fastpath import native
from tunesmith.fastpath.norm import rms_norm, use_fast_norm
from tunesmith.models.precision import cast_once


def _norm(dim=96):
    norm = LlamaRMSNorm(dim, eps=1e-5)
    norm.weight.data = torch.rand(dim, generator=torch.Generator().manual_seed(0)) + 0.5
    norm.weight.requires_grad_(False)
    return norm


@pytest.mark.parametrize("autocast", [False, True])
def test_rms_norm_equals_llamas_forward_and_backward(autocast):
    assert native.library() is not None  # this machine has a C compiler
    norm = _norm()
    x = (torch.randn(2, 37, 96, generator=torch.Generator().manual_seed(1)) * 3).requires_grad_()
    grad = torch.randn(2, 37, 96, generator=torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        fast = rms_norm(x, norm.weight, norm.variance_epsilon)
        reference = norm(x)
    assert fast.dtype == reference.dtype == torch.float32
    torch.testing.assert_close(fast, reference, rtol=1e-6, atol=1e-6)  # the sum of squares in another order
    (dx_fast,) = torch.autograd.grad(fast, x, grad)
    (dx_ref,) = torch.autograd.grad(reference, x, grad)
    torch.testing.assert_close(dx_fast, dx_ref, rtol=1e-5, atol=1e-6)


def test_rms_norm_keeps_input_and_row_scales_and_hands_its_bf16_rounding_to_cast_once():
    norm = _norm()
    x = torch.randn(5, 96, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = rms_norm(x, norm.weight, norm.variance_epsilon)
    saved = y.grad_fn.saved_tensors
    assert [t.shape for t in saved] == [(5, 96), (96,), (5,)]  # no normalised copy of the rows
    low = cast_once(y, torch.bfloat16)
    assert low is cast_once(y, torch.bfloat16) and torch.equal(low, y.detach().to(torch.bfloat16))


def test_rms_norm_leaves_what_it_does_not_serve():
    norm = _norm()
    x = torch.randn(4, 96)
    assert rms_norm(x.bfloat16(), norm.weight, 1e-5) is None
    trainable = nn.Parameter(norm.weight.detach().clone())
    assert rms_norm(x, trainable, 1e-5) is None  # full fine-tuning needs the weight's gradient


def test_models_norms_are_routed_and_keep_their_outputs(tiny_tokenizer):
    model = build_tiny_model(tiny_tokenizer)
    for p in model.parameters():
        p.requires_grad_(False)
    ids = torch.randint(0, len(tiny_tokenizer), (2, 10))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    assert use_fast_norm(model) == 5  # two per layer and the final one
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=1e-5, atol=1e-5)
    assert use_fast_norm(model) == 5
    model.model.norm.weight.requires_grad_(True)  # a trainable weight: the module's own forward serves
    out = model(input_ids=ids).logits
    out.sum().backward()
    assert model.model.norm.weight.grad is not None
