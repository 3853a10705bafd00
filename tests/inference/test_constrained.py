"""Decoding within the label set: only labels, probabilities that sum to 1, and the free answer where it is a label."""

import pytest
import torch

from tunesmith.data.encode import encode_prompt
from tunesmith.data.examples import Example
from tunesmith.inference.constrained import LabelTrie, answers_within_labels, constrained_answers, label_distribution, label_trie
from tunesmith.inference.generate import generate_batched
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


@pytest.fixture()
def ending_lm(tiny_model_dir):
    """The tiny model with its end-of-turn logit steered up after its first free token for the first prompt.

    A random model seldom ends a turn; this one ends the first prompt's answer after one token (as
    a tuned model ends a label) and rambles on the others.
    """
    lm = load_base_model(tiny_model_dir, precision="fp32")
    prompt = prompts(lm)[0]
    with torch.no_grad():
        first = int(lm.model(input_ids=torch.tensor([prompt])).logits[0, -1].argmax())
        hidden = lm.model.model(input_ids=torch.tensor([prompt + [first]])).last_hidden_state[0, -1]
        head = torch.nn.Parameter(lm.model.lm_head.weight.detach().clone())  # untied from the embeddings
        head[lm.tokenizer.eos_token_id] = 8 * hidden / hidden.norm() ** 2
        lm.model.lm_head.weight = head
    return lm


def test_free_answers_are_read_off_the_labels_pass_only_where_free_decoding_gives_the_same(ending_lm):
    lm, ps, end = ending_lm, prompts(ending_lm), ending_lm.tokenizer.eos_token_id
    with torch.no_grad():
        free_ids = [lm.model.generate(input_ids=torch.tensor([p]), max_new_tokens=8, do_sample=False,
                                      pad_token_id=lm.tokenizer.pad_token_id)[0, len(p):].tolist() for p in ps]
    ended = [tuple(ids) for ids in free_ids if end in ids]
    assert len(ended) == 1 and len(ended[0]) > 1  # the first answer ends, as a label does; the others ramble
    # the trie of the run's labels plus that answer's tokens as one more label
    trie = LabelTrie({**label_trie(lm.tokenizer, LABELS, "Classify.").sequences, "ended": ended[0]}, end)
    outputs, answers = answers_within_labels(lm, ps, trie, 8, batch_size=2)
    assert outputs == generate_batched(lm, ps, 8, batch_size=2)  # the free answers, whether read off or decoded
    assert [(a.label, a.probability) for a in answers] == \
        [(b.label, pytest.approx(b.probability)) for b in constrained_answers(lm, ps, trie, 2)]
    assert [a.greedy for a in answers] == [tuple(ids[: len(trie.sequences[a.label])]) == trie.sequences[a.label]
                                           for a, ids in zip(answers, free_ids)]
    assert answers[0].label == "ended" and answers[0].greedy and not any(a.greedy for a in answers[1:])
