"""Shared fixtures: a tiny random Llama model with a small real BPE tokenizer, built in-process, and a loopback chat server.

The tokenizer is trained here in milliseconds and carries the same ChatML template as the
embedded model, so unit tests exercise the real rendering, masking, training and
generation code without the 135M-parameter model.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "Classify the message. Answer with one label only, from: card_arrival, pin_blocked, exchange_rate.",
    "Where is my card? It has not arrived yet. I am still waiting on my card.",
    "My PIN is blocked, how do I unblock it? I typed the wrong pin three times.",
    "What exchange rate do you use? How much is the rate for euros to dollars?",
    "Answer the question from the context. Summarise the text in one short sentence.",
    "The quick brown fox jumps over the lazy dog. Context: Question: system user assistant",
] * 4

LABELS = ["card_arrival", "pin_blocked", "exchange_rate"]
TEXTS = {
    "card_arrival": ["Where is my card?", "My card has not arrived yet.", "I am still waiting on my card.",
                     "When will my new card come?", "Has my card been sent?", "The card never arrived."],
    "pin_blocked": ["My PIN is blocked.", "How do I unblock my pin?", "I typed the wrong pin three times.",
                    "My card pin got locked.", "Unblock my PIN please.", "The PIN does not work any more."],
    "exchange_rate": ["What exchange rate do you use?", "How much is the euro rate?", "What is the rate for dollars?",
                      "Tell me today's exchange rate.", "Which rate applies abroad?", "Is the exchange rate fair?"],
}


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with ChatML special tokens, trained on a tiny corpus."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   unk_token="<|endoftext|>", pad_token="<|im_end|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> LlamaForCausalLM:
    """A two-layer Llama with random weights sized to the tokenizer.

    The wide initialisation lets a 32-wide model express confident predictions (with the
    usual 0.02 its logits stay nearly uniform whatever LoRA learns).
    """
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, initializer_range=0.2, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(cfg)


@pytest.fixture(scope="session")
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: PreTrainedTokenizerFast) -> Path:
    """A saved tiny model folder (config, safetensors, tokenizer), usable as ``model.base``."""
    out = tmp_path_factory.mktemp("tiny-llama")
    build_tiny_model(tiny_tokenizer).save_pretrained(out, safe_serialization=True)
    tiny_tokenizer.save_pretrained(out)
    return out


def write_classification_data(path: Path, copies: int = 3) -> Path:
    """A small text/label JSONL file (3 labels x 6 texts x ``copies``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for c in range(copies):
            for label, texts in TEXTS.items():
                for t in texts:
                    fh.write(json.dumps({"text": t if c == 0 else f"{t} ({c})", "label": label}) + "\n")
    return path


@pytest.fixture()
def tiny_project(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A project folder whose config trains the tiny model for a few steps on tiny data."""
    write_classification_data(tmp_path / "data" / "train.jsonl")
    (tmp_path / "tunesmith.yaml").write_text(
        "objective: {task: classification, target: 0.0}\n"
        "data: {dedup: {near: false}}\n"  # the fixture's copies are near-duplicates by design
        # fp32: the same numbers on every CPU (auto would use bf16 where the CPU has it)
        f"model: {{base: '{tiny_model_dir}', max_seq_len: 96, precision: fp32}}\n"
        "adapter: {r: 4, alpha: 8}\n"
        "train: {epochs: 1, max_steps: 3, batch_size: 8, lr: 0.01, eval_every: 2, logging_steps: 1}\n"
        "eval: {max_new_tokens: 4, batch_size: 8}\n"
    )
    return tmp_path


class ChatServer:
    """A real OpenAI-style ``/v1/chat/completions`` HTTP server on loopback, answering by a given rule.

    It checks the bearer key and records every request; tests use it where a user would point
    tunesmith at a hosted or local LLM endpoint.

    Args:
        answer: Request body -> reply text.
        key: The API key expected as ``Authorization: Bearer <key>``.
    """

    def __init__(self, answer, key: str = "secret-key"):
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
                if self.headers.get("Authorization") != f"Bearer {key}":
                    self.send_response(401)
                    self.end_headers()
                    self.wfile.write(b'{"error": "bad key"}')
                    return
                reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": answer(body)}}]}
                payload = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):  # keep test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()


@pytest.fixture(autouse=True, scope="session")
def _own_known_runs_dirs(tmp_path_factory):
    """The test session keeps its own list of known runs folders, not the user's (tunesmith.runs.store).

    Session-wide, so that module-wide fixtures that run the pipeline use it too; commands run in
    subprocesses inherit it through the environment.
    """
    path = tmp_path_factory.mktemp("known") / "runs_dirs.json"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNESMITH_KNOWN_RUNS_DIRS", str(path))
        yield path
