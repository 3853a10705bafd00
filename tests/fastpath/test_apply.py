"""The fast training path: frozen weights stored in bf16 give autocast's products, and casts are reused."""

import contextlib
import copy

import pytest
import torch
from torch import nn

from tests.conftest import build_tiny_model
from tunesmith.config import AdapterConfig
from tunesmith.models.adapters import apply_adapter
from tunesmith.models.load import LoadedModel
from tunesmith.fastpath.apply import (PACKED_MULTIPLE, PADDED_MULTIPLE, PARTS, FastPathReport, fast_path, frozen_cast,
                                      store_frozen_weights)


def test_frozen_linear_weights_in_bf16_give_the_same_autocast_outputs(tiny_tokenizer):
    model = apply_adapter(build_tiny_model(tiny_tokenizer), AdapterConfig(method="lora"))
    before = copy.deepcopy(model).eval()
    assert store_frozen_weights(model, torch.bfloat16) == 14
    base = model.get_base_model()
    assert base.model.layers[0].mlp.down_proj.base_layer.weight.dtype == torch.bfloat16
    assert base.lm_head.weight.dtype == torch.float32  # tied to the embedding: left in full precision
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    ids = torch.randint(0, len(tiny_tokenizer), (2, 12))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(model.eval()(input_ids=ids).logits, before(input_ids=ids).logits)
    assert store_frozen_weights(model, torch.bfloat16) == 0


def test_frozen_cast_is_made_once_and_renewed_after_a_change():
    weight = nn.Parameter(torch.randn(6, 4), requires_grad=False)
    cast = frozen_cast(weight, torch.bfloat16)
    assert frozen_cast(weight, torch.bfloat16) is cast
    with torch.no_grad():
        weight.mul_(2.0)
    renewed = frozen_cast(weight, torch.bfloat16)
    assert renewed is not cast and torch.equal(renewed, weight.to(torch.bfloat16))
    trainable = nn.Parameter(torch.randn(3, 3))
    assert frozen_cast(trainable, torch.bfloat16).grad_fn is not None  # still differentiable


def _lora(tiny_tokenizer, method="lora", autocast=torch.bfloat16, **kw):
    model = apply_adapter(build_tiny_model(tiny_tokenizer), AdapterConfig(method=method, **kw))
    return LoadedModel(model, tiny_tokenizer, None, torch.device("cpu"), autocast)


def test_fast_path_reports_what_it_applied(tiny_tokenizer):
    lm = _lora(tiny_tokenizer)
    expected = {"fused_lora_layers": 14, "seeded_dropout": 14, "fast_attention": True, "packing": True,
                "prefix_sharing": True, "frozen_weights_in_bf16": 14, "swiglu_mlps": 2, "rms_norms": 5,
                "rotary_attention": 2, "shape_multiple": PACKED_MULTIPLE,
                "native_kernels": True,  # a C compiler here
                "warnings": []}
    with fast_path(lm) as applied:
        assert applied.to_dict() == expected
    # A second training on the same model (a sweep, a resumed loop) applies the same again.
    with fast_path(lm, "auto") as applied:
        assert applied.to_dict() == expected
    with fast_path(_lora(tiny_tokenizer, autocast=None)) as fp32:
        assert fp32.frozen_weights_in_bf16 == 0
    with fast_path(_lora(tiny_tokenizer, "prefix", autocast=None), [p for p in PARTS if p != "bf16_weights"]) as on_prefix:
        assert on_prefix.packing is False and on_prefix.shape_multiple == PADDED_MULTIPLE  # virtual tokens in every row
        assert on_prefix.prefix_sharing is False  # sharing is a way of packing
    with pytest.raises(ValueError, match="unknown parts"):
        with fast_path(lm, ["turbo"]):
            pass
    kept = [p for p in PARTS if p not in {"swiglu", "rms_norm", "rotary", "shape_buckets", "prefix_sharing"}]
    with fast_path(_lora(tiny_tokenizer, autocast=None), kept) as some:
        assert (some.swiglu_mlps, some.rms_norms, some.rotary_attention, some.shape_multiple, some.prefix_sharing,
                some.packing, some.warnings) == (0, 0, 0, 1, False, True, [])  # left out on purpose: no warning
    with fast_path(_lora(tiny_tokenizer), "off") as none:
        assert none.to_dict() == {**FastPathReport(native_kernels=True).to_dict()}


def _state(model):
    """What the fast path may change: instance forwards, dropout classes, attention, weight dtypes."""
    modules = [m for m in model.modules()]
    privates = [f for m in modules for f in (vars(m).get("_kernel_funcs") or {}).values()]
    return {"forwards": sum("forward" in vars(m) for m in modules + privates),
            "dropouts": sorted(type(m).__name__ for m in modules if isinstance(m, nn.Dropout)),
            "attention": model.get_base_model().config._attn_implementation,
            "dtypes": [(n, p.dtype) for n, p in model.named_parameters()]}


def test_fast_path_gives_the_model_back_as_peft_defines_it(tiny_tokenizer):
    for autocast in (torch.bfloat16, None):
        lm = _lora(tiny_tokenizer, autocast=autocast, dropout=0.1)
        before, plain = _state(lm.model), copy.deepcopy(lm.model).eval()
        ids = torch.randint(0, len(tiny_tokenizer), (2, 12), generator=torch.Generator().manual_seed(0))
        with fast_path(lm) as applied:
            assert _state(lm.model) != before and applied.fused_lora_layers == 14
        assert _state(lm.model) == before
        context = torch.autocast("cpu", dtype=autocast) if autocast else contextlib.nullcontext()
        with torch.no_grad(), context:  # bf16 weights went back to fp32, rounded as autocast rounds them
            assert torch.equal(lm.model.eval()(input_ids=ids).logits, plain(input_ids=ids).logits)


def test_fast_path_warns_about_a_part_that_should_apply_but_does_not(tiny_tokenizer, monkeypatch):
    # What a transformers release whose attention code the rotary routing no longer knows looks like.
    monkeypatch.setattr("tunesmith.fastpath.apply.use_fast_rotary", lambda model: 0)
    with pytest.warns(UserWarning, match="rotary: 0 of 2 rotary attention modules"):
        with fast_path(_lora(tiny_tokenizer)) as applied:
            assert applied.rotary_attention == 0 and len(applied.warnings) == 1
    monkeypatch.undo()
    eager = _lora(tiny_tokenizer)
    eager.model.get_base_model().set_attn_implementation("eager")
    with pytest.warns(UserWarning, match="fast_attention: the model uses attention 'eager'"):
        with fast_path(eager) as applied:
            assert applied.packing is False
