"""The loss, batching and the training loop on the tiny model."""

import json
from dataclasses import replace

import pytest
import torch

from tests.conftest import LABELS, TEXTS, build_tiny_model
from tunesmith.config import AdapterConfig, TrainConfig
from tunesmith.data.encode import IGNORE_INDEX, encode_example
from tunesmith.data.examples import Example
from tunesmith.models.adapters import apply_adapter, load_adapter
from tunesmith.fastpath.attention import use_fast_attention
from tunesmith.models.load import load_base_model
from tunesmith.train import batching
from tunesmith.train.batching import collate, collate_packed, packed_length, packed_passes, random_batches, shared_prefix
from tunesmith.train.loop import train_adapter
from tunesmith.train.loss import completion_loss, evaluate_loss


def examples(copies: int = 2) -> list[Example]:
    return [Example(id=f"{lab}{i}{c}", prompt=t, target=lab, label=lab)
            for c in range(copies) for lab in LABELS for i, t in enumerate(TEXTS[lab])]


def encode_all(tok, exs):
    return [encode_example(tok, e, "Classify: " + ", ".join(LABELS), 96) for e in exs]


def test_collate_pads_right_without_labels(tiny_tokenizer):
    enc = encode_all(tiny_tokenizer, examples(1)[:3])
    batch = collate(enc, tiny_tokenizer.pad_token_id)
    lengths = [len(e.input_ids) for e in enc]
    for i, n in enumerate(lengths):
        assert batch["attention_mask"][i].sum() == n
        assert (batch["labels"][i, n:] == IGNORE_INDEX).all()


def test_random_batches_cover_every_example_once_in_a_seeded_order():
    batches = random_batches(10, 4, seed=3)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(i for b in batches for i in b) == list(range(10))
    assert batches == random_batches(10, 4, seed=3) and batches != random_batches(10, 4, seed=4)


def test_collate_packed_concatenates_and_restarts_positions(tiny_tokenizer):
    enc = encode_all(tiny_tokenizer, examples(1)[:3])
    batch = collate_packed(enc)
    n = [len(e.input_ids) for e in enc]
    assert batch["input_ids"].shape == (1, sum(n)) and batch["lengths"].tolist() == n
    assert batch["input_ids"][0].tolist() == [t for e in enc for t in e.input_ids]
    assert batch["position_ids"][0].tolist() == [p for k in n for p in range(k)]
    starts = [0, n[0], n[0] + n[1]]
    # The first token of each example carries no label; every other label is the example's own.
    assert all(batch["labels"][0, s] == IGNORE_INDEX for s in starts)
    assert batch["labels"][0, n[0] + 1:].tolist()[: n[1] - 1] == enc[1].labels[1:]


def test_collate_rounds_rows_up_with_a_segment_of_its_own(tiny_tokenizer):
    enc = [replace(e, weight=2.0) for e in encode_all(tiny_tokenizer, examples(1)[:3])]
    n = [len(e.input_ids) for e in enc]
    batch = collate_packed(enc, tiny_tokenizer.pad_token_id, multiple=32)
    width = -(-sum(n) // 32) * 32
    extra = width - sum(n)
    assert extra > 0 and batch["input_ids"].shape == (1, width) and batch["lengths"].tolist() == [*n, extra]
    assert batch["input_ids"][0, sum(n):].tolist() == [tiny_tokenizer.pad_token_id] * extra
    assert batch["position_ids"][0, sum(n):].tolist() == list(range(extra))
    assert (batch["labels"][0, sum(n):] == IGNORE_INDEX).all() and (batch["weights"][0, sum(n):] == 0).all()
    assert collate(enc, tiny_tokenizer.pad_token_id, multiple=8)["input_ids"].shape == (3, -(-max(n) // 8) * 8)


def test_shared_prefix_stops_before_the_first_labelled_prediction(tiny_tokenizer):
    enc = encode_all(tiny_tokenizer, examples(1)[:4])
    common = len(enc[0].input_ids)
    for e in enc[1:]:
        common = next(i for i, (a, b) in enumerate(zip(enc[0].input_ids, e.input_ids)) if a != b)
    assert 0 < shared_prefix(enc) <= common
    # Two copies of one example: all tokens in common, but the one before the first label is each one's own.
    twice = [enc[0], enc[0]]
    first_label = next(i for i, t in enumerate(enc[0].labels) if t != IGNORE_INDEX)
    assert shared_prefix(twice) == first_label - 1
    assert shared_prefix(enc[:1]) == 0  # nothing to share with
    other = replace(enc[1], input_ids=[enc[0].input_ids[0] + 1, *enc[1].input_ids[1:]])
    assert shared_prefix([enc[0], other]) == 0


def test_collate_packed_puts_a_shared_prefix_in_the_row_once(tiny_tokenizer):
    enc = [replace(e, weight=w) for e, w in zip(encode_all(tiny_tokenizer, examples(1)[:3]), (1.0, 2.0, 3.0))]
    p = shared_prefix(enc)
    rest = [len(e.input_ids) - p for e in enc]
    batch = collate_packed(enc, tiny_tokenizer.pad_token_id, multiple=16, share_prefix=True)
    used = p + sum(rest)
    extra = -(-used // 16) * 16 - used
    assert int(batch["prefix"]) == p and batch["lengths"].tolist() == [*rest, extra]
    assert batch["input_ids"][0, :used].tolist() == enc[0].input_ids[:p] + [t for e in enc for t in e.input_ids[p:]]
    # Each example's positions go on from the prefix, as in its own row.
    assert batch["position_ids"][0, :used].tolist() == list(range(p)) + [q for n in rest for q in range(p, p + n)]
    assert batch["labels"][0, :used].tolist() == [IGNORE_INDEX] * p + [t for e in enc for t in e.labels[p:]]
    assert batch["weights"][0, :used].tolist() == [0.0] * p + [w for e, n in zip(enc, rest) for w in [e.weight] * n]
    assert "prefix" not in collate_packed(enc[:1], share_prefix=True)


@pytest.mark.parametrize(("weighted", "multiple", "share"),
                         [(False, 1, False), (True, 1, False), (True, 32, False), (False, 1, True), (True, 32, True)])
def test_packed_row_gives_the_padded_batchs_loss_and_gradients(tiny_tokenizer, weighted, multiple, share):
    """Packing (with and without a shared prefix) on the fast attention path against right padding on SDPA."""
    enc = encode_all(tiny_tokenizer, examples(1)[:5])
    if weighted:
        enc = [replace(e, weight=w) for e, w in zip(enc, (0.5, 1.0, 2.0, 1.0, 3.0))]
    assert len({len(e.input_ids) for e in enc}) > 1  # the padded batch has padding
    results = []
    for fast in (False, True):
        model = apply_adapter(build_tiny_model(tiny_tokenizer), AdapterConfig(method="lora", dropout=0.0))
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.1, generator=torch.Generator().manual_seed(len(name)))
        if fast:
            assert use_fast_attention(model.get_base_model())
        pad = tiny_tokenizer.pad_token_id
        batch = collate_packed(enc, pad, multiple, share) if fast else collate(enc, pad, multiple)
        assert ("prefix" in batch) == (fast and share)
        loss, n = completion_loss(model, batch)
        loss.backward()
        results.append((loss.detach(), n, {k: p.grad for k, p in model.named_parameters() if p.requires_grad}))
    (loss0, n0, g0), (loss1, n1, g1) = results
    assert n0 == n1
    torch.testing.assert_close(loss1, loss0, rtol=1e-5, atol=1e-5)
    for name in g0:  # fp32 sums in another order: agreement to rounding
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-3, atol=1e-5)


def test_completion_loss_matches_transformers_loss(tiny_model_dir, tiny_tokenizer):
    """Applying the head only at labelled positions, and no padding mask, gives the same loss as the full forward."""
    lm = load_base_model(tiny_model_dir, "fp32")
    batch = collate(encode_all(tiny_tokenizer, examples(1)[:4]), tiny_tokenizer.pad_token_id)
    # Padded rows: the loss runs without a padding mask, which right padding makes exact.
    assert (batch["attention_mask"] == 0).any()
    loss_sum, n = completion_loss(lm.model, batch)
    reference = lm.model(**batch).loss  # transformers shifts and averages over labelled tokens
    assert n == int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    torch.testing.assert_close(loss_sum / n, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("weighted", [False, True])
def test_evaluation_loss_computes_a_shared_opening_once_and_equals_the_whole_rows(tiny_model_dir, tiny_tokenizer,
                                                                                weighted):
    """A long system prompt (a label list) is cached once; the loss equals that of the whole rows."""
    lm = load_base_model(tiny_model_dir, "fp32")
    system = "Classify the message into one of these labels, answering with the label only: " + ", ".join(LABELS * 4)
    enc = [encode_example(tiny_tokenizer, e, system, 256) for e in examples(1)[:7]]
    enc = [replace(e, weight=1.0 + weighted * i) for i, e in enumerate(enc)]
    assert shared_prefix(enc) >= batching.MIN_PREFIX_TOKENS
    with torch.no_grad():
        whole = [completion_loss(lm.model, collate(enc[i:i + 3], tiny_tokenizer.pad_token_id)) for i in range(0, 7, 3)]
    expected = sum(float(loss) for loss, _ in whole) / sum(n for _, n in whole)
    got = evaluate_loss(lm.model, enc, tiny_tokenizer.pad_token_id, 3, lm.device, lm.autocast)
    assert got == pytest.approx(expected, rel=1e-5)


def test_training_lowers_loss_and_reloads_identically(tiny_model_dir, tiny_tokenizer, tmp_path):
    torch.manual_seed(0)
    lm = load_base_model(tiny_model_dir, "fp32")  # the same numbers on every CPU
    lm.model = apply_adapter(lm.model, AdapterConfig(r=4, alpha=8, dropout=0.0))
    train, val = encode_all(tiny_tokenizer, examples(2)), encode_all(tiny_tokenizer, examples(1))
    pad = tiny_tokenizer.pad_token_id
    before = evaluate_loss(lm.model, val, pad, 8, lm.device, lm.autocast)
    cfg = TrainConfig(epochs=5, batch_size=8, lr=0.05, eval_every=2, logging_steps=1, early_stopping_patience=None)
    result = train_adapter(lm, train, val, cfg, seed=0, metrics_path=tmp_path / "metrics.jsonl")
    after = evaluate_loss(lm.model, val, pad, 8, lm.device, lm.autocast)
    assert after < before * 0.8
    assert result.best_val_loss == pytest.approx(after, rel=1e-5)  # the best weights are the ones kept
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("train_loss" in r for r in rows) and any("val_loss" in r for r in rows)
    assert result.tokens == sum(len(e.input_ids) for e in train) * 5  # no padding counted
    # The examples share their system prompt: each batch computes it once.
    assert result.fast_path["prefix_sharing"] and 0 < result.computed_tokens < result.tokens
    assert result.steps == 25 and result.tokens_per_second > 0 and result.peak_rss_mb > 0

    lm.model.save_pretrained(tmp_path / "adapter")
    fresh = load_adapter(load_base_model(tiny_model_dir, "fp32").model, tmp_path / "adapter")
    batch = collate(val[:4], pad)
    with torch.no_grad():
        torch.testing.assert_close(fresh(**batch).logits, lm.model(**batch).logits)


def test_early_stopping_keeps_the_best_checkpoint(tiny_model_dir, tiny_tokenizer):
    torch.manual_seed(0)
    lm = load_base_model(tiny_model_dir, "fp32")
    lm.model = apply_adapter(lm.model, AdapterConfig(r=4, alpha=8, dropout=0.0))
    train, val = encode_all(tiny_tokenizer, examples(2)), encode_all(tiny_tokenizer, examples(1))
    # An absurd learning rate makes validation loss worse after the first evaluation.
    cfg = TrainConfig(epochs=20, batch_size=8, lr=5.0, warmup_ratio=0.0, scheduler="constant", eval_every=1,
                      early_stopping_patience=2, max_grad_norm=None)
    result = train_adapter(lm, train, val, cfg, seed=0)
    assert result.stopped_early
    assert result.steps < 20 * 5
    kept = evaluate_loss(lm.model, val, tiny_tokenizer.pad_token_id, 8, lm.device, lm.autocast)
    assert kept == pytest.approx(result.best_val_loss, rel=1e-5)


def test_long_batches_are_cut_into_passes_counted_as_packed(tiny_tokenizer):
    enc = encode_all(tiny_tokenizer, examples(1))[:8]
    row = packed_length(enc, share_prefix=True)
    assert row == sum(len(e.input_ids) for e in enc) - shared_prefix(enc) * 7
    assert packed_passes(enc, True, limit=row) == [enc]  # counted with the shared opening once: one pass
    assert packed_passes(enc, False, limit=row) != [enc]  # the same batch unshared is longer
    parts = packed_passes(enc, True, limit=row // 3)
    assert [e for p in parts for e in p] == enc and len(parts) == 4
    assert packed_passes(enc, True, limit=1) == [[e] for e in enc]  # one example per pass at least


def test_a_batch_trained_in_passes_gives_the_one_pass_update(tiny_model_dir, tiny_tokenizer, monkeypatch):
    """A batch cut into packed passes (long examples) updates the weights as one row would."""
    data = encode_all(tiny_tokenizer, examples(1))[:8]
    results, computed = [], []
    for limit in (None, 2 * max(len(e.input_ids) for e in data)):
        if limit:
            monkeypatch.setattr(batching, "MAX_PASS_TOKENS", limit)
        torch.manual_seed(0)
        lm = load_base_model(tiny_model_dir, "fp32")
        lm.model = apply_adapter(lm.model, AdapterConfig(r=4, alpha=8, dropout=0.0))
        cfg = TrainConfig(max_steps=1, batch_size=8, lr=0.01, warmup_ratio=0.0, scheduler="constant")
        result = train_adapter(lm, data, [], cfg, seed=0)
        assert result.fast_path["packing"]
        computed.append(result.computed_tokens)
        results.append({n: p.detach().clone() for n, p in lm.model.named_parameters() if p.requires_grad})
    assert computed[1] > computed[0]  # each pass computes its own copy of the shared opening
    for name in results[0]:
        torch.testing.assert_close(results[0][name], results[1][name], rtol=1e-4, atol=1e-4)


def test_grad_accumulation_matches_a_big_batch(tiny_model_dir, tiny_tokenizer):
    """Two accumulated micro-batches of 4 give the same update as one batch of 8."""
    data = encode_all(tiny_tokenizer, examples(1))[:8]
    results = []
    for bs, accum in ((8, 1), (4, 2)):
        torch.manual_seed(0)
        lm = load_base_model(tiny_model_dir, "fp32")
        lm.model = apply_adapter(lm.model, AdapterConfig(r=4, alpha=8, dropout=0.0))
        cfg = TrainConfig(max_steps=1, batch_size=bs, grad_accum=accum, lr=0.01, warmup_ratio=0.0, scheduler="constant")
        train_adapter(lm, data, [], cfg, seed=0)
        results.append({n: p.detach().clone() for n, p in lm.model.named_parameters() if p.requires_grad})
    for name in results[0]:
        # Adam normalises each coordinate, so near-zero gradients magnify rounding: allow 1% of one step (lr).
        torch.testing.assert_close(results[0][name], results[1][name], rtol=1e-4, atol=1e-4)


def test_loss_weights_scale_each_examples_tokens(tiny_model_dir, tiny_tokenizer):
    lm = load_base_model(tiny_model_dir, "fp32")
    enc = encode_all(tiny_tokenizer, examples(1)[:2])
    pad = tiny_tokenizer.pad_token_id
    parts = [completion_loss(lm.model, collate([e], pad))[0] for e in enc]
    weighted = [replace(e, weight=w) for e, w in zip(enc, (0.5, 3.0))]
    batch = collate(weighted, pad)
    assert batch["weights"].tolist() == [0.5, 3.0] and "weights" not in collate(enc, pad)
    total, _ = completion_loss(lm.model, batch)
    torch.testing.assert_close(total, 0.5 * parts[0] + 3.0 * parts[1], rtol=1e-4, atol=1e-4)
