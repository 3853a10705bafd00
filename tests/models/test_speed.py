"""The fast training path: frozen weights stored in bf16 give autocast's products, and casts are reused."""

import copy

import pytest
import torch
from torch import nn

from tests.conftest import build_tiny_model
from tunesmith.config import AdapterConfig
from tunesmith.models.adapters import apply_adapter
from tunesmith.models.load import LoadedModel
from tunesmith.models.speed import PACKED_MULTIPLE, PADDED_MULTIPLE, frozen_cast, speed_up, store_frozen_weights


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


def test_speed_up_reports_what_it_applied(tiny_tokenizer):
    model = apply_adapter(build_tiny_model(tiny_tokenizer), AdapterConfig(method="lora"))
    lm = LoadedModel(model, tiny_tokenizer, None, torch.device("cpu"), torch.bfloat16)
    rest = {"swiglu_mlps": 2, "rms_norms": 5, "rotary_attention": 2, "shape_multiple": PACKED_MULTIPLE,
            "native_kernels": True}  # a C compiler here
    assert speed_up(lm) == {"fused_lora_layers": 14, "fast_attention": True, "packing": True, "prefix_sharing": True,
                            "frozen_weights_in_bf16": 14, **rest}
    # A second training call on the same model (a sweep, a resumed loop) keeps the path on.
    assert speed_up(lm) == {"fused_lora_layers": 14, "fast_attention": True, "packing": True, "prefix_sharing": True,
                            "frozen_weights_in_bf16": 0, **rest}
    fp32 = LoadedModel(apply_adapter(build_tiny_model(tiny_tokenizer), AdapterConfig(method="lora")), tiny_tokenizer,
                       None, torch.device("cpu"), None)
    assert speed_up(fp32)["frozen_weights_in_bf16"] == 0
    prefix = LoadedModel(apply_adapter(build_tiny_model(tiny_tokenizer), AdapterConfig(method="prefix")),
                         tiny_tokenizer, None, torch.device("cpu"), None)
    on_prefix = speed_up(prefix, skip={"bf16_weights"})
    assert on_prefix["packing"] is False and on_prefix["shape_multiple"] == PADDED_MULTIPLE  # virtual tokens in every row
    assert on_prefix["prefix_sharing"] is False  # sharing is a way of packing
    with pytest.raises(ValueError, match="unknown parts"):
        speed_up(lm, skip={"turbo"})
    plain = LoadedModel(apply_adapter(build_tiny_model(tiny_tokenizer), AdapterConfig(method="lora")), tiny_tokenizer,
                        None, torch.device("cpu"), None)
    skipped = speed_up(plain, skip={"swiglu", "rms_norm", "rotary", "shape_buckets", "prefix_sharing"})
    assert (skipped["swiglu_mlps"], skipped["rms_norms"], skipped["rotary_attention"], skipped["shape_multiple"],
            skipped["prefix_sharing"], skipped["packing"]) == (0, 0, 0, 1, False, True)
