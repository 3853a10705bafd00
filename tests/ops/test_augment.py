"""Synthetic data: generators (a local model, an OpenAI-compatible endpoint on loopback), filters, provenance."""

import json

import pytest
from typer.testing import CliRunner

from tunesmith.ops.augment import augment
from tunesmith.inference.clients import LocalGenerator, OpenAIGenerator
from tunesmith.cli import app
from tunesmith.data.examples import Example
from tunesmith.errors import UserError
from tunesmith.models.load import load_base_model
from tests.conftest import ChatServer

SEEDS = [Example("s1", "Where is the card I ordered last week?", "card_arrival", label="card_arrival", source="t.jsonl", line=1),
         Example("s2", "My PIN is blocked after three wrong tries", "pin_blocked", label="pin_blocked", source="t.jsonl", line=2)]


def augment_rule(body):
    """Paraphrases: the card seed in other words, the PIN seed unchanged (the filter must drop it);
    new examples: all the same text (all but one must be dropped as repeats of each other)."""
    user = body["messages"][-1]["content"]
    if user.startswith("Rewrite"):
        seed = user.split("\n\n", 1)[1]
        text = "When will my ordered card arrive? I placed the order a week ago" if "card" in seed else seed
    else:
        text = "How long does a transfer to another bank take?"
    return f'"{text}"'


@pytest.fixture()
def chat_server(monkeypatch):
    monkeypatch.setenv("TEST_GEN_KEY", "secret-key")
    server = ChatServer(augment_rule)
    yield server
    server.close()


def test_endpoint_generator_rows_carry_provenance_and_repeats_are_filtered(chat_server):
    gen = OpenAIGenerator(chat_server.url, "judge-1", api_key_env="TEST_GEN_KEY")
    result = augment(SEEDS, gen, "text_label", {"text": "utterance"}, paraphrases=1, new=3, seed=5, temperature=0.7)
    assert result.counts["asked"] == 5
    assert result.counts["dropped"] == {"repeats a seed": 1, "repeats another generated row": 2}
    assert result.counts["kept"] == len(result.rows) == 2
    para, new = result.rows
    assert para["utterance"].startswith("When will my ordered card arrive") and para["label"] == "card_arrival"
    assert para["needs_review"] is True and para["provenance"]["method"] == "paraphrase"
    assert para["provenance"]["seed_ids"] == ["s1"] and para["provenance"]["generator"].startswith("openai-compatible:judge-1@")
    assert new["provenance"]["method"] == "self_instruct" and new["label"] in ("card_arrival", "pin_blocked")
    first = chat_server.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["model"] == "judge-1" and first["temperature"] == 0.7


def test_endpoint_errors_are_clear(chat_server, monkeypatch):
    monkeypatch.setenv("TEST_GEN_KEY", "wrong")
    with pytest.raises(UserError, match="HTTP 401"):
        OpenAIGenerator(chat_server.url, "m", api_key_env="TEST_GEN_KEY").complete([[{"role": "user", "content": "x"}]], 0.5, 0)
    with pytest.raises(UserError, match="cannot reach"):
        OpenAIGenerator("http://127.0.0.1:9/v1", "m").complete([[{"role": "user", "content": "x"}]], 0.5, 0)


def test_local_model_generates_for_every_candidate(tiny_model_dir):
    gen = LocalGenerator(load_base_model(tiny_model_dir), name="tiny", max_new_tokens=8)
    texts = gen.complete([[{"role": "user", "content": "hello"}]] * 2, temperature=0.9, seed=1)
    assert len(texts) == 2 and texts == gen.complete([[{"role": "user", "content": "hello"}]] * 2, temperature=0.9, seed=1)
    seeds = [Example("g1", "Write a haiku", "Leaves fall", source="t", line=1)]
    result = augment(seeds, gen, "prompt_response", {}, paraphrases=2, new=2, seed=0)
    assert result.counts["asked"] == 4
    assert result.counts["kept"] + sum(result.counts["dropped"].values()) == 4
    assert all(r["needs_review"] and set(r) >= {"prompt", "response", "provenance"} for r in result.rows)


def test_augment_and_review_from_the_command_line(tmp_path, chat_server, tiny_model_dir):
    runner = CliRunner()
    (tmp_path / "data").mkdir()
    rows = [{"text": ex.prompt, "label": ex.label} for ex in SEEDS] * 1
    rows += [{"text": f"filler question number {i} about cards", "label": "card_arrival"} for i in range(8)]
    (tmp_path / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "tunesmith.yaml").write_text(f"model: {{base: '{tiny_model_dir}'}}\ndata: {{dedup: {{near: false}}}}\n")
    gen_file = tmp_path / "data" / "generated.jsonl"
    res = runner.invoke(app, ["data", "augment", "-c", str(tmp_path / "tunesmith.yaml"), "--generator", "openai",
                              "--endpoint", chat_server.url, "--model", "m", "--api-key-env", "TEST_GEN_KEY",
                              "--new", "2", "--out", str(gen_file), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["kept"] == 1 and gen_file.is_file()
    res = runner.invoke(app, ["data", "augment", "-c", str(tmp_path / "tunesmith.yaml"), "--generator", "openai",
                              "--endpoint", chat_server.url, "--model", "m", "--new", "1", "--out", str(gen_file)])
    assert res.exit_code == 2 and "--append" in res.output
    sheet = tmp_path / "review.csv"
    res = runner.invoke(app, ["data", "review", "export", str(gen_file), "--out", str(sheet), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["rows"] == 1
    sheet.write_text(sheet.read_text().replace("\n1,,", "\n1,approve,").replace("another bank", "a bank abroad"))
    res = runner.invoke(app, ["data", "review", "import", str(sheet), "--into", str(gen_file), "--reviewer", "ana", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) | {"rejected_file": None} == {"approved": 1, "rejected": 0, "pending": 0, "edited": 1,
                                                                 "rejected_file": None}
    (row,) = [json.loads(line) for line in gen_file.read_text().splitlines()]
    assert row["needs_review"] is False and "a bank abroad" in row["text"] and row["review"]["reviewer"] == "ana"
