"""Chat generators: anything that answers conversations, a local model or an OpenAI-compatible endpoint.

Synthetic data (``tunesmith data augment``) and LLM-as-judge evaluation both talk to one of these.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tunesmith.errors import UserError
from tunesmith.inference.generate import generate_batched
from tunesmith.models.load import LoadedModel

Messages = list[dict[str, str]]


class Generator(Protocol):
    """Anything that answers chat conversations: a local model or an HTTP endpoint."""

    name: str

    def complete(self, conversations: Sequence[Messages], temperature: float, seed: int) -> list[str]:
        """One answer per conversation."""
        ...


@dataclass
class LocalGenerator:
    """A loaded model answering through its own chat template, batched with the KV cache.

    Attributes:
        lm: The loaded model.
        name: Recorded in each generated row's provenance.
        max_new_tokens: Longest answer.
        batch_size: Conversations generated together.
    """

    lm: LoadedModel
    name: str
    max_new_tokens: int = 96
    batch_size: int = 16

    def complete(self, conversations: Sequence[Messages], temperature: float, seed: int) -> list[str]:
        """Sampled (or, at temperature 0, greedy) answers."""
        tok = self.lm.tokenizer
        prompts = [tok.apply_chat_template(list(c), tokenize=True, add_generation_prompt=True, return_dict=False)
                   for c in conversations]
        return generate_batched(self.lm, prompts, self.max_new_tokens, self.batch_size, label="generate",
                                temperature=temperature, seed=seed)


@dataclass
class OpenAIGenerator:
    """An OpenAI-compatible ``/chat/completions`` endpoint (a vLLM, llama.cpp or hosted server).

    Attributes:
        url: Base URL, e.g. ``http://127.0.0.1:8000/v1``.
        model: Model name sent with each request.
        api_key_env: Environment variable that holds the API key (sent as a bearer token if set).
        max_tokens: Longest answer.
        timeout: Seconds per request.
    """

    url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    max_tokens: int = 256
    timeout: float = 120.0
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = f"openai-compatible:{self.model}@{self.url}"

    def complete(self, conversations: Sequence[Messages], temperature: float, seed: int) -> list[str]:
        """One request per conversation.

        Raises:
            UserError: The endpoint cannot be reached or answers with an error.
        """
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        out = []
        for i, messages in enumerate(conversations):
            body = {"model": self.model, "messages": list(messages), "temperature": temperature,
                    "max_tokens": self.max_tokens, "seed": seed + i}
            req = urllib.request.Request(self.url.rstrip("/") + "/chat/completions", json.dumps(body).encode(), headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    answer = json.loads(resp.read())
                out.append(str(answer["choices"][0]["message"]["content"]))
            except urllib.error.HTTPError as exc:
                raise UserError(f"{self.url}: HTTP {exc.code}: {exc.read()[:300].decode(errors='replace')}") from exc
            except (urllib.error.URLError, OSError) as exc:
                raise UserError(f"cannot reach the generator endpoint {self.url}: {exc}") from exc
            except (KeyError, IndexError, ValueError) as exc:
                raise UserError(f"{self.url}: not an OpenAI-style chat completion answer: {exc}") from exc
        return out
