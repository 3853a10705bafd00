"""The continuous-batching engine: each row answers as it would alone, whatever joins or leaves, whichever adapter."""

import time

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from tunesmith.data.encode import encode_prompt
from tunesmith.data.examples import Example
from tunesmith.inference.constrained import constrained_answers, label_trie
from tunesmith.inference.engine import Engine, Job, QueueFull, Sampling
from tunesmith.inference.generate import generate_batched
from tunesmith.models.load import load_base_model

TEXTS = ["where is my card", "my pin is blocked since monday", "rate for dollars", "stop the transfer", "hello",
         "I lost my card abroad and need a new one", "fees?", "how do I top up"]
SYSTEM = "Classify the message into one of: card_arrival, pin_blocked, exchange_rate, cancel_transfer, top_up. " \
         "Answer with the label only, nothing else, in lower case."
LABELS = ["card_arrival", "pin_blocked", "exchange_rate", "cancel_transfer", "top_up"]


def save_lora(model_dir, out, seed):
    torch.manual_seed(seed)
    lm = load_base_model(model_dir, precision="fp32")
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    get_peft_model(lm.model, cfg).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {"a": save_lora(tiny_model_dir, root / "a", 1), "b": save_lora(tiny_model_dir, root / "b", 2)}


@pytest.fixture()
def engine(tiny_model_dir, adapters):
    eng = Engine(load_base_model(tiny_model_dir, precision="fp32"), "tiny", max_batch=4)
    for name, path in adapters.items():
        eng.add_adapter(name, path).result(60)
    yield eng
    eng.stop(10)


def prompts(tok):
    return [encode_prompt(tok, Example(id=str(i), prompt=t, target=""), SYSTEM, 256) for i, t in enumerate(TEXTS)]


def alone(model_dir, adapter, ps, tokens=8):
    lm = load_base_model(model_dir, precision="fp32")
    if adapter is not None:
        lm.model = PeftModel.from_pretrained(lm.model, adapter).eval()
    return lm, generate_batched(lm, ps, tokens, batch_size=len(ps))


def test_mixed_adapters_in_one_batch_answer_as_each_adapter_alone(engine, tiny_model_dir, adapters):
    ps = prompts(engine.lm.tokenizer)
    engine.set_opening("a", ps[0][:40])  # adapter a's rows start from the cached opening
    names = ["a", "b", "tiny", "a", "b", "tiny", "a", "b"]
    tokens = [8, 3, 5, 2, 8, 4, 6, 8]  # 8 requests through 4 slots: rows leave at different steps, others join
    jobs = [Job(n, p, Sampling(max_tokens=k)) for n, p, k in zip(names, ps, tokens)]
    for job in jobs:
        engine.submit(job)
    got = [job.done.result(60).text for job in jobs]
    assert engine._openings["a"].cache is not None
    for name in ("a", "b", "tiny"):
        for k in set(tokens):
            want = alone(tiny_model_dir, adapters.get(name), ps, k)[1]
            assert [g for g, n, t in zip(got, names, tokens) if n == name and t == k] == \
                [w for w, n, t in zip(want, names, tokens) if n == name and t == k]


def test_label_set_answers_equal_evaluation_decoding_within_the_labels(engine, tiny_model_dir, adapters):
    ps = prompts(engine.lm.tokenizer)
    lm, _ = alone(tiny_model_dir, adapters["a"], ps[:1], 1)
    trie = label_trie(lm.tokenizer, LABELS, SYSTEM)
    want = constrained_answers(lm, ps, trie, batch_size=3)
    jobs = [Job("a", p, Sampling(max_tokens=2), trie=trie) for p in ps]  # a label completes past max_tokens
    for job in jobs:
        engine.submit(job)
    got = [job.done.result(60) for job in jobs]
    assert [g.label for g in got] == [w.label for w in want] and all(g.text == g.label for g in got)
    assert [g.probability for g in got] == pytest.approx([w.probability for w in want], rel=1e-4)


def test_streamed_pieces_make_the_answer_and_stop_strings_end_it(engine):
    ps = prompts(engine.lm.tokenizer)
    pieces = []
    job = Job("b", ps[1], Sampling(max_tokens=12), on_text=pieces.append)
    full = engine.submit(job).result(60)
    assert "".join(pieces).rstrip() == full.text and full.completion_tokens == 12 and full.finish_reason == "length"
    stop = full.text[len(full.text) // 2:][:2]
    cut = engine.submit(Job("b", ps[1], Sampling(max_tokens=12, stop=(stop,)))).result(60)
    assert cut.finish_reason == "stop" and stop not in cut.text and full.text.startswith(cut.text)


def test_a_seed_repeats_a_sampled_answer(engine):
    p = prompts(engine.lm.tokenizer)[2]
    runs = [engine.submit(Job("a", p, Sampling(max_tokens=10, temperature=1.0, top_p=0.9, seed=s))).result(60).text
            for s in (7, 7, 8)]
    assert runs[0] == runs[1]


def test_adapters_come_and_go_while_requests_run(engine, adapters):
    ps = prompts(engine.lm.tokenizer)
    running = [engine.submit(Job("a", p, Sampling(max_tokens=40))) for p in ps[:4]]
    engine.add_adapter("c", adapters["b"]).result(60)
    engine.remove_adapter("a").result(60)
    with pytest.raises(KeyError):
        engine.submit(Job("a", ps[0], Sampling(max_tokens=4)))
    assert all(f.result(60).completion_tokens == 40 for f in running)  # in flight: finished on the removed adapter
    assert engine.submit(Job("c", ps[0], Sampling(max_tokens=4))).result(60).completion_tokens == 4


def test_a_cancelled_request_leaves_and_a_full_queue_refuses(tiny_model_dir):
    eng = Engine(load_base_model(tiny_model_dir, precision="fp32"), "tiny", max_batch=1, max_queue=1)
    try:
        p = prompts(eng.lm.tokenizer)[0]
        first = Job("tiny", p, Sampling(max_tokens=400))
        eng.submit(first)
        time.sleep(0.2)
        eng.submit(Job("tiny", p, Sampling(max_tokens=2)))
        with pytest.raises(QueueFull):
            eng.submit(Job("tiny", p, Sampling(max_tokens=2)))
        eng.cancel(first)
        deadline = time.time() + 30
        while eng.running() or eng.waiting():
            assert time.time() < deadline
            time.sleep(0.05)
        assert first.done.cancelled() and len(first.generated) < 400
    finally:
        eng.stop(10)
