"""Parity with the reference trainer: tunesmith's loop takes the same steps as ``transformers.Trainer``.

With one batch per step (so data order cannot differ) and no dropout (so no random draws
differ), both start from the same LoRA weights and must log the same loss at every step: the
completion-only head, the loss normalisation, clipping, AdamW and the warm-up/cosine schedule
all agree with the reference implementation, and speed-ups cannot drift from it unnoticed.
"""

import copy
import tempfile

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

from tests.conftest import TEXTS, build_tiny_model
from tunesmith.config import AdapterConfig, TrainConfig
from tunesmith.data.encode import IGNORE_INDEX, Encoded
from tunesmith.models.adapters import apply_adapter, get_method
from tunesmith.models.load import LoadedModel
from tunesmith.train.loop import train_adapter


def _encoded(tok) -> list[Encoded]:
    out = []
    for label, texts in TEXTS.items():
        for text in texts:
            prompt = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
            p = tok(prompt, add_special_tokens=False)["input_ids"]
            c = tok(label + "<|im_end|>\n", add_special_tokens=False)["input_ids"]
            out.append(Encoded(p + c, [IGNORE_INDEX] * len(p) + c, False))
    return out


@pytest.mark.parametrize("fast_path", ["auto", "off"])  # with the fast path and without it, as PEFT defines the model
def test_step_losses_equal_transformers_trainer(tiny_tokenizer, fast_path):
    enc, steps = _encoded(tiny_tokenizer), 6
    base = build_tiny_model(tiny_tokenizer)
    ours = apply_adapter(copy.deepcopy(base), AdapterConfig(method="lora", dropout=0.0))
    ref = get_peft_model(copy.deepcopy(base), LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, bias="none",
                                                         target_modules="all-linear", task_type="CAUSAL_LM"))
    ref.load_state_dict(ours.state_dict())  # the same starting adapter

    cfg = TrainConfig(epochs=steps, batch_size=len(enc), lr=1e-3, logging_steps=1, eval_every=None,
                      early_stopping_patience=None, warmup_ratio=0.2, scheduler="cosine", max_grad_norm=1.0,
                      fast_path=fast_path)
    result = train_adapter(LoadedModel(ours, tiny_tokenizer, None, torch.device("cpu"), None), enc, [], cfg,
                           seed=0, method=get_method("lora"))
    our_losses = [r["train_loss"] for r in result.history if "train_loss" in r]
    assert bool(result.fast_path["fused_lora_layers"]) == (fast_path == "auto")

    rows = [{"input_ids": e.input_ids, "attention_mask": [1] * len(e.input_ids), "labels": e.labels} for e in enc]
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=len(enc), num_train_epochs=steps,
                                 learning_rate=1e-3, lr_scheduler_type="cosine", warmup_steps=int(0.2 * steps),
                                 max_grad_norm=1.0, weight_decay=0.0, logging_steps=1, save_strategy="no",
                                 report_to=[], use_cpu=True, seed=0, disable_tqdm=True)
        trainer = Trainer(model=ref, args=args, train_dataset=rows,
                          data_collator=DataCollatorForSeq2Seq(tiny_tokenizer, padding=True, label_pad_token_id=-100))
        trainer.train()
    ref_losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]

    assert len(our_losses) == len(ref_losses) == steps
    assert our_losses == pytest.approx(ref_losses, rel=1e-4)
    assert our_losses[-1] < our_losses[0] - 0.3  # and training moved
