"""The server on the embedded model: the official client's answers are evaluation's greedy answers."""

import pytest

from tests.serve.conftest import ServeProcess
from tunesmith.inference.generate import generate_batched
from tunesmith.models.load import load_base_model
from tunesmith.models.resolve import resolve_base

pytestmark = pytest.mark.integration

QUESTIONS = ["Where is my new card?", "How do I change my PIN?", "Why was I charged twice for one payment?",
             "Can I top up with cash?"]


def test_the_embedded_model_served_answers_as_it_generates(tmp_path):
    lm = load_base_model(resolve_base("smollm2-135m-instruct"), "auto")
    tok = lm.tokenizer
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)["input_ids"]
               for q in QUESTIONS]
    want = generate_batched(lm, prompts, 24, batch_size=len(prompts), prefix_cache=False)
    proc = ServeProcess(tmp_path, "--base", "smollm2-135m-instruct")
    try:
        client = proc.client(timeout=120)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(4) as pool:  # the four share the running batch
            got = list(pool.map(lambda q: client.chat.completions.create(
                model="smollm2-135m-instruct", max_tokens=24,
                messages=[{"role": "user", "content": q}]).choices[0].message.content, QUESTIONS))
    finally:
        proc.stop()
    # under bf16 a near-tie may go either way with another batch's shapes; most answers are the same text
    same = sum(g == w for g, w in zip(got, want))
    assert same >= 3, list(zip(got, want))
