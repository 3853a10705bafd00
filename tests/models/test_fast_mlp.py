"""The SwiGLU function keeps two activations instead of three and gives autograd's very results."""

import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import build_tiny_model
from tunesmith.models.fast_mlp import swiglu, use_fast_mlp


def _grads(fn, dtype):
    torch.manual_seed(0)
    gate = torch.randn(37, 96, dtype=dtype, requires_grad=True)
    up = torch.randn(37, 96, dtype=dtype, requires_grad=True)
    out = fn(gate, up)
    out.backward(torch.randn_like(out))
    return out, gate.grad, up.grad


def test_swiglu_equals_autograd_bit_for_bit():
    for dtype in (torch.float32, torch.bfloat16):
        fast = _grads(swiglu, dtype)
        reference = _grads(lambda g, u: F.silu(g) * u, dtype)
        for a, b in zip(fast, reference):
            assert torch.equal(a, b)


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
