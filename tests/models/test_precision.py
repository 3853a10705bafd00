"""bf16 weights for inference give exactly autocast's bf16 products."""

import torch
from peft import LoraConfig, get_peft_model

from tunesmith.models.load import load_base_model
from tunesmith.models.precision import inference_weights


def test_bf16_weights_give_the_logits_autocast_gives(tiny_model_dir):
    lm = load_base_model(tiny_model_dir, precision="fp32")
    torch.manual_seed(0)
    model = get_peft_model(lm.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)).eval()
    ids = torch.randint(0, 300, (2, 12))

    def logits():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return model(input_ids=ids).logits

    before = logits()
    embed = model.get_input_embeddings().weight
    assert inference_weights(model, torch.bfloat16) > 0
    assert torch.equal(logits(), before)
    assert embed.dtype == torch.float32  # the tied embedding keeps its fp32 weight; the head has its own copy
    assert inference_weights(model, None) == 0
