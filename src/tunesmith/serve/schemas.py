"""The OpenAI request shapes the server accepts, and its error replies.

Requests are validated here; any field that is malformed, out of range or unknown is refused
with an OpenAI-style error (``{"error": {"message", "type", "param", "code"}}``) naming the field.
Parameters OpenAI has and this server does not implement are accepted only at their neutral
value (``n: 1``, penalties 0), so a client is never silently given something else than it asked.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ApiError(Exception):
    """An error reply: HTTP status, message, the field at fault and OpenAI's error type and code."""

    TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
             404: "not_found_error", 409: "invalid_request_error", 413: "invalid_request_error",
             429: "rate_limit_error", 503: "server_error", 500: "server_error"}

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict[str, Any]:
        """The JSON reply."""
        return {"error": {"message": self.message, "type": self.TYPES.get(self.status, "invalid_request_error"),
                          "param": self.param, "code": self.code}}


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Request):
    """A text part of a message's content (other parts, such as images, are refused)."""

    type: Literal["text"]
    text: str


class Message(_Request):
    """One chat message."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        """The content as one string."""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(_Request):
    """``stream_options``."""

    include_usage: bool = False


class TunesmithOptions(_Request):
    """The ``tunesmith`` extension field of a request."""

    constrained: bool | None = None
    """Decode within the served run's labels (default: as the run was evaluated; false: a free answer)."""


class _Sampled(_Request):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] = 1
    frequency_penalty: Literal[0] = 0
    presence_penalty: Literal[0] = 0
    user: str | None = Field(None, max_length=256)
    metadata: dict[str, str] | None = None

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("up to 4 non-empty stop strings")
        return value

    def stops(self) -> tuple[str, ...]:
        """The stop strings as a tuple."""
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


class ChatRequest(_Sampled):
    """``POST /v1/chat/completions``."""

    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tunesmith: TunesmithOptions | None = None


class CompletionRequest(_Sampled):
    """``POST /v1/completions``: the prompt is continued as given (no chat template)."""

    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: Literal[False] = False

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("one prompt per request")
        return value

    def text(self) -> str:
        """The prompt."""
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class FeedbackRequest(_Request):
    """``POST /v1/feedback``: what a user thought of an answer."""

    response_id: str = Field(min_length=1, max_length=128)
    rating: Literal["up", "down", 1, 2, 3, 4, 5] | None = None
    comment: str | None = Field(None, max_length=10_000)
    correction: str | None = Field(None, max_length=100_000)

    def score(self) -> int | None:
        """The rating as stored, on one 1-5 scale: up is 5, down is 1 (so thumbs and stars count alike:
        2 or less is negative, 4 or more positive)."""
        return {"up": 5, "down": 1}.get(self.rating, self.rating) if self.rating is not None else None  # type: ignore[arg-type]


class AdapterRequest(_Request):
    """``POST /v1/adapters``: serve one more adapter (admin key)."""

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
    path: str | None = None
    run: str | None = None


def parse(model: type[BaseModel], data: Any) -> Any:
    """Validate a request body.

    Raises:
        ApiError: 400 naming the first field at fault.
    """
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(str(p) for p in err["loc"]) or None
        if err["type"] == "extra_forbidden":
            return_msg = f"unrecognized request argument: {param}"
        elif err["type"] == "missing":
            return_msg = f"missing required argument: {param}"
        else:
            return_msg = f"{param}: {err['msg']}"
        raise ApiError(400, return_msg, param, err["type"]) from None
