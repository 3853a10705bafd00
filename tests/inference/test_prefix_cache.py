"""The prefix cache: the prompts' shared opening computed once gives the very outputs of computing it for every row."""

import pytest

from tunesmith.data.encode import encode_prompt
from tunesmith.data.examples import Example
from tunesmith.inference.constrained import constrained_answers, label_trie
from tunesmith.inference.generate import PrefixCache, generate_batched, shared_prefix_length
from tunesmith.models.load import load_base_model

LABELS = [f"intent_{i}" for i in range(20)]
SYSTEM = "Classify the message. Answer with one label only, from: " + ", ".join(LABELS) + "."
TEXTS = ["where is my card", "my pin is blocked since yesterday", "rate for dollars", "stop the transfer",
         "hello", "I lost my phone and need help blocking the app right now"]


def prompts(lm):
    return [encode_prompt(lm.tokenizer, Example(id=str(i), prompt=t, target=""), SYSTEM, 512) for i, t in enumerate(TEXTS)]


def test_shared_prefix_length():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # each row keeps a token of its own
    assert shared_prefix_length([[1, 2]]) == 0


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_cached_and_uncached_generation_are_identical(tiny_model_dir, precision):
    lm = load_base_model(tiny_model_dir, precision=precision)
    ps = prompts(lm)
    assert PrefixCache.for_prompts(lm, ps) is not None  # the label list is long enough to be cached
    plain = generate_batched(lm, ps, 6, batch_size=4, prefix_cache=False)
    assert generate_batched(lm, ps, 6, batch_size=4) == plain  # mixed lengths, several batches
    trie = label_trie(lm.tokenizer, LABELS, SYSTEM)
    with_cache = constrained_answers(lm, ps, trie, batch_size=4)
    without = constrained_answers(lm, ps, trie, batch_size=4, prefix_cache=False)
    assert [a.label for a in with_cache] == [a.label for a in without]
    assert [a.probability for a in with_cache] == pytest.approx([a.probability for a in without], rel=1e-3)


@pytest.mark.integration
def test_cached_generation_is_identical_on_the_embedded_model():
    from tunesmith.models.resolve import resolve_base
    lm = load_base_model(resolve_base("smollm2-135m-instruct"))
    ps = prompts(lm)
    assert generate_batched(lm, ps, 12, batch_size=3) == generate_batched(lm, ps, 12, batch_size=3, prefix_cache=False)
