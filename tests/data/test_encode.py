"""Chat-template rendering and completion-only labels."""

from tunesmith.data.encode import IGNORE_INDEX, encode_example, encode_prompt, render_completion_text, render_prompt_text
from tunesmith.data.examples import Example

EX = Example(id="1", prompt="Where is my card?", target="card_arrival", label="card_arrival")


def test_only_completion_tokens_carry_labels(tiny_tokenizer):
    enc = encode_example(tiny_tokenizer, EX, "Classify.", max_len=256)
    prompt_ids = encode_prompt(tiny_tokenizer, EX, "Classify.", 256)
    n_prompt = len(prompt_ids)
    assert enc.input_ids[:n_prompt] == prompt_ids  # training sees exactly the prompt generation sees
    assert all(t == IGNORE_INDEX for t in enc.labels[:n_prompt])
    assert enc.labels[n_prompt:] == enc.input_ids[n_prompt:]
    completion = tiny_tokenizer.decode(enc.input_ids[n_prompt:])
    assert completion == "card_arrival<|im_end|>\n"
    assert not enc.truncated


def test_rendering_uses_the_models_chat_template(tiny_tokenizer):
    text = render_prompt_text(tiny_tokenizer, EX, "Classify.")
    assert text == "<|im_start|>system\nClassify.<|im_end|>\n<|im_start|>user\nWhere is my card?<|im_end|>\n<|im_start|>assistant\n"
    assert render_completion_text(tiny_tokenizer, EX, "Classify.") == "card_arrival<|im_end|>\n"
    # without a system prompt the template's own default system message appears
    assert "You are a helpful assistant." in render_prompt_text(tiny_tokenizer, EX, None)


def test_long_examples_are_cut_from_the_left_keeping_the_answer(tiny_tokenizer):
    long = Example(id="2", prompt="word " * 300, target="pin_blocked")
    enc = encode_example(tiny_tokenizer, long, None, max_len=64)
    assert len(enc.input_ids) == 64 and enc.truncated
    n_label = enc.n_completion
    assert tiny_tokenizer.decode(enc.input_ids[-n_label:]) == "pin_blocked<|im_end|>\n"


CONVERSATION = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Where is my card?"}, {"role": "assistant", "content": "card_arrival"}]


def test_multi_turn_puts_loss_on_every_assistant_turn(tiny_tokenizer):
    ex = Example(id="c", prompt="Where is my card?", target="card_arrival", turns=CONVERSATION)
    enc = encode_example(tiny_tokenizer, ex, "Be brief.", max_len=512)
    spans, current = [], []
    for tok, lab in zip(enc.input_ids, enc.labels):
        if lab != IGNORE_INDEX:
            current.append(tok)
        elif current:
            spans.append(current)
            current = []
    if current:
        spans.append(current)
    assert [tiny_tokenizer.decode(sp) for sp in spans] == ["Hello!<|im_end|>\n", "card_arrival<|im_end|>\n"]
    full = tiny_tokenizer.apply_chat_template([{"role": "system", "content": "Be brief."}, *CONVERSATION], tokenize=False)
    assert tiny_tokenizer.decode(enc.input_ids) == full
    # evaluation generates the last answer from everything before it
    prompt = render_prompt_text(tiny_tokenizer, ex, "Be brief.")
    assert prompt.endswith("Where is my card?<|im_end|>\n<|im_start|>assistant\n") and "Hello!" in prompt
