"""Decoding within the label set: only labels, probabilities that sum to 1, and the free answer where it is a label."""

import pytest
import torch

from tunesmith.data.encode import encode_prompt
from tunesmith.data.examples import Example
from tunesmith.inference.constrained import constrained_answers, label_distribution, label_trie
from tunesmith.models.load import load_base_model

LABELS = ["card_arrival", "card", "pin_blocked", "exchange_rate", "cancel_transfer"]
TEXTS = ["where is my card", "my pin is blocked", "rate for dollars", "stop the transfer please", "hello"]


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_base_model(tiny_model_dir, precision="fp32")


def prompts(lm):
    return [encode_prompt(lm.tokenizer, Example(id=str(i), prompt=t, target=""), "Classify.", 128) for i, t in enumerate(TEXTS)]


def test_answers_are_labels_with_the_probability_their_distribution_gives(lm):
    trie = label_trie(lm.tokenizer, LABELS, "Classify.")
    assert all(seq[-1] == lm.tokenizer.eos_token_id for seq in trie.sequences.values())  # "card" ends, "card_arrival" goes on
    answers = constrained_answers(lm, prompts(lm), trie, batch_size=2)  # mixed lengths, left padding
    for prompt, answer in zip(prompts(lm), answers):
        dist = label_distribution(lm, prompt, trie)
        assert answer.label in LABELS and set(dist) == set(LABELS)
        assert sum(dist.values()) == pytest.approx(1.0, abs=1e-5)
        assert answer.probability == pytest.approx(dist[answer.label], rel=1e-4)
    # batching does not change an answer
    alone = [constrained_answers(lm, [p], trie, batch_size=1)[0] for p in prompts(lm)]
    assert [a.label for a in alone] == [a.label for a in answers]


def test_where_the_free_answer_is_a_label_the_constrained_answer_is_that_label(lm):
    prompt = prompts(lm)[0]
    with torch.no_grad():
        free = lm.model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=3, do_sample=False,
                                 pad_token_id=lm.tokenizer.pad_token_id)[0, len(prompt):].tolist()
    free = [t for t in free if t != lm.tokenizer.eos_token_id]
    label = lm.tokenizer.decode(free)
    trie = label_trie(lm.tokenizer, [label, *LABELS], "Classify.")
    assert list(trie.sequences[label][:-1]) == free  # the free answer's own tokens, then the end of turn
    assert constrained_answers(lm, [prompt], trie, batch_size=1)[0].label == label


def test_no_labels_is_refused(lm):
    with pytest.raises(ValueError, match="no labels"):
        label_trie(lm.tokenizer, [], None)
