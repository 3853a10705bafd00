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


LABELS = "Classify the message. Answer with one label only, from: " + ", ".join(f"intent_{i}" for i in range(12)) + "."


def test_truncation_shortens_the_text_in_its_middle_and_keeps_the_instructions(tiny_tokenizer):
    words = " ".join(f"w{i}" for i in range(400))
    ex = Example(id="long", prompt=f"START {words} the question at the END?", target="intent_3")
    enc = encode_example(tiny_tokenizer, ex, LABELS, max_len=280)
    text = tiny_tokenizer.decode(enc.input_ids)
    assert enc.truncated and len(enc.input_ids) <= 280
    assert LABELS in text and "intent_11." in text  # the whole label list, its head included
    assert "START" in text and "the question at the END?" in text and " … " in text and "w200 " not in text
    assert tiny_tokenizer.decode([t for t in enc.labels if t != IGNORE_INDEX]) == "intent_3<|im_end|>\n"
    # generation sees the very prompt training saw
    prompt = encode_prompt(tiny_tokenizer, ex, LABELS, 280 - (len(enc.input_ids) - enc.labels.count(IGNORE_INDEX)))
    assert enc.input_ids[:len(prompt)] == prompt


def test_a_long_conversation_drops_its_oldest_exchanges_not_its_system_message(tiny_tokenizer):
    turns = []
    for i in range(12):
        turns += [{"role": "user", "content": f"question number {i} " + "pad " * 10},
                  {"role": "assistant", "content": f"answer {i}"}]
    ex = Example(id="chat", prompt=turns[-2]["content"], target=turns[-1]["content"], system="Be brief.", turns=turns)
    enc = encode_example(tiny_tokenizer, ex, None, max_len=200)
    text = tiny_tokenizer.decode(enc.input_ids)
    assert enc.truncated and len(enc.input_ids) <= 200
    assert text.startswith("<|im_start|>system\nBe brief.") and "answer 11" in text and "question number 0 " not in text


def test_instructions_that_leave_no_room_stop_the_data_check_with_what_fits(tmp_path, tiny_model_dir):
    import json

    from typer.testing import CliRunner

    from tunesmith.cli import app
    rows = [{"text": f"message about topic {i}", "label": f"a_rather_long_intent_name_{i}"} for i in range(60)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = CliRunner().invoke(app, ["data", "check", str(tmp_path / "d.jsonl"), "--set", f"model.base={tiny_model_dir}",
                                   "--set", "model.max_seq_len=256", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2, res.output
    assert "label list" in res.output and "raise model.max_seq_len to at least" in res.output
