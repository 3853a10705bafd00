"""The SwiGLU function keeps two activations instead of three and gives autograd's very results."""

import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import build_tiny_model
from tunesmith.fastpath import mlp as fast_mlp, native
from tunesmith.fastpath.mlp import swiglu, use_fast_mlp


def _grads(fn, dtype, shape=(37, 96), scale=1.0):
    torch.manual_seed(0)
    gate = (torch.randn(*shape) * scale).to(dtype).requires_grad_()
    up = (torch.randn(*shape) * scale).to(dtype).requires_grad_()
    out = fn(gate, up)
    out.backward(torch.randn_like(out))
    return out, gate.grad, up.grad


def _reference(gate, up):
    return F.silu(gate) * up


def test_swiglu_equals_autograd_bit_for_bit_without_the_kernels(monkeypatch):
    monkeypatch.setattr(fast_mlp, "library", lambda: None)
    for dtype in (torch.float32, torch.bfloat16):
        for a, b in zip(_grads(swiglu, dtype), _grads(_reference, dtype)):
            assert torch.equal(a, b)


def test_swiglu_kernels_round_as_pytorch_does():
    """The C kernels: the same roundings, with the C library's expf, which differs from PyTorch's in the last bit."""
    assert native.library() is not None  # this machine has a C compiler
    for scale in (1.0, 6.0):
        fast = _grads(swiglu, torch.bfloat16, (300, 1000), scale)
        reference = _grads(_reference, torch.bfloat16, (300, 1000), scale)
        for a, b in zip(fast, reference):
            # a silu one bf16 step apart moves a product by at most two of them
            torch.testing.assert_close(a.float(), b.float(), rtol=2 * 2**-7, atol=1e-30)
            assert float((a != b).float().mean()) < 0.01
        # silu is computed in fp32 and rounded once before the product, as F.silu in bf16 does
        assert torch.equal(fast[0][:1, :8], reference[0][:1, :8])


def test_swiglu_keeps_only_gate_and_up():
    gate = torch.randn(5, 8, requires_grad=True)
    up = torch.randn(5, 8, requires_grad=True)
    out = swiglu(gate, up)
    saved = out.grad_fn.saved_tensors
    assert len(saved) == 2 and saved[0] is not None


def test_models_mlps_are_routed_and_keep_their_outputs(tiny_tokenizer):
    model = build_tiny_model(tiny_tokenizer)
    ids = torch.randint(0, len(tiny_tokenizer), (2, 10))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    assert use_fast_mlp(model) == 2
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, before)
    assert use_fast_mlp(model) == 2  # a second call changes nothing

    class OtherMLP(nn.Module):  # a different forward keeps its own code
        def __init__(self):
            super().__init__()
            self.gate_proj = self.up_proj = self.down_proj = nn.Linear(4, 4)
            self.act_fn = nn.SiLU()

        def forward(self, x):
            return self.down_proj(self.act_fn(self.gate_proj(x)) + self.up_proj(x))

    assert use_fast_mlp(OtherMLP()) == 0
