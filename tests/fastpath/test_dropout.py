"""The adapters' cheaper dropout: the same distribution, gradient and reproducibility as F.dropout."""

import pytest
import torch
from torch import nn

from tests.conftest import build_tiny_model
from tunesmith.config import AdapterConfig
from tunesmith.models.adapters import apply_adapter
from tunesmith.fastpath.dropout import FastDropout, _words, apply_keep, keep_mask, use_fast_dropout, use_plain_dropout
from tunesmith.fastpath.native import library

# SplitMix64 with seed 0 (Vigna's reference generator): its first three outputs.
SPLITMIX64_SEED0 = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


def test_mask_bits_are_splitmix64():
    words = [w & (2**64 - 1) for w in _words(3, 0, torch.device("cpu")).tolist()]
    assert words == SPLITMIX64_SEED0


def test_mask_keeps_each_element_with_probability_one_minus_p():
    for seed, p in ((0, 0.05), (1, 0.1), (2, 0.5)):
        keep = keep_mask(torch.Size([4000, 64]), p, seed).float()
        assert abs(keep.mean().item() - (1 - p)) < 0.004
        # Each of the four 16-bit lanes of a 64-bit draw is uniform (the sign bits included).
        lanes = keep.flatten().view(-1, 4).mean(0)
        assert torch.all((lanes - (1 - p)).abs() < 0.008), lanes


def test_masks_are_independent_between_elements_and_seeds():
    keep = keep_mask(torch.Size([200_000]), 0.5, 7).float()
    neighbours = (keep[:-1] * keep[1:]).mean().item()
    assert abs(neighbours - 0.25) < 0.005
    other = keep_mask(torch.Size([200_000]), 0.5, 8).float()
    assert abs((keep * other).mean().item() - 0.25) < 0.005


def test_the_kernel_is_built_on_this_machine():
    # The project's machines have a C compiler: without the kernel training silently slows down.
    assert library() is not None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("n", [1, 3, 255, 256, 257, 1000, 4099])
def test_kernel_equals_the_reference_mask(dtype, n):
    x = torch.randn(n, dtype=torch.float32).to(dtype) + 3  # no zeros of its own
    for seed, p in ((0, 0.05), (2**64 - 1, 0.3), (123456789, 0.5)):
        expected = x * keep_mask(x.shape, p, seed).to(dtype)
        assert torch.equal(apply_keep(x, p, seed), expected)
        inplace = x.clone()
        apply_keep(inplace, p, seed, out=inplace)
        assert torch.equal(inplace, expected)


def test_non_contiguous_input_uses_the_same_mask_as_its_contiguous_copy():
    x = torch.randn(64, 40, dtype=torch.bfloat16).t()
    assert torch.equal(apply_keep(x, 0.2, 5), apply_keep(x.contiguous(), 0.2, 5))


def test_forward_scales_kept_values_and_backward_uses_the_same_mask():
    torch.manual_seed(2)
    x = torch.randn(300, 50, requires_grad=True)
    drop = FastDropout(0.2).train()
    y = drop(x)
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / 0.8)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    assert torch.allclose(x.grad, g * kept / 0.8)
    # The expectation is preserved, as with F.dropout.
    big = torch.ones(1_000_000)
    assert abs(drop(big).mean().item() - 1.0) < 0.01


def test_same_seed_same_mask_and_eval_is_identity():
    drop = FastDropout(0.1).train()
    x = torch.randn(64, 64)
    torch.manual_seed(3)
    a = drop(x)
    torch.manual_seed(3)
    assert torch.equal(a, drop(x))
    assert torch.equal(drop.eval()(x), x)


def test_only_adapter_dropout_is_swapped_and_swapped_back(tiny_tokenizer):
    model = apply_adapter(build_tiny_model(tiny_tokenizer), AdapterConfig(method="lora", dropout=0.1))
    assert use_fast_dropout(model) == 14  # two blocks, seven linear layers each
    swapped = [m for n, m in model.named_modules() if isinstance(m, FastDropout)]
    adapted = [n for n, m in model.named_modules() if n.endswith("lora_dropout")]
    assert len(swapped) == len(adapted) == 14
    assert all(m.p == 0.1 for m in swapped)
    assert use_fast_dropout(model) == 0  # nothing left to replace
    assert use_plain_dropout(model) == 14
    assert not any(isinstance(m, FastDropout) for m in model.modules())
    assert all(m.p == 0.1 for n, m in model.named_modules() if type(m) is nn.Dropout and "lora_dropout" in n)
    plain = nn.Sequential(nn.Dropout(0.3))
    assert use_fast_dropout(plain) == 0 and type(plain[0]) is nn.Dropout
