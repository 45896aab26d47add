"""The request bodies `lightkit serve` accepts, in OpenAI's shapes, and its errors in OpenAI's shape.

Bodies are parsed here, never by the framework, so that every bad request gets the same answer a
client library knows how to read: a 4xx with `{"error": {"message", "type", "param", "code"}}`,
`param` naming the field (`messages[0].role`, `max_tokens`). Types are strict: a string where a
number belongs is an error, not a guess.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ApiError(Exception):
    """A request refused: HTTP `status`, OpenAI's error `type`, and the field it is about."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": None}}


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class Message(Strict):
    role: Literal["system", "user", "assistant"]
    content: str


class Extension(Strict):
    """The `lightkit` field of a request: refine each answer toward a reward the server names."""

    refine: bool = True
    reward: str | None = None
    refine_calls: int = Field(16, ge=1, le=256)


class Sampling(Strict):
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, bool] | None = None
    lightkit: Extension | None = None


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)


class CompletionRequest(Sampling):
    prompt: str | list[str]


class TagRequest(Strict):
    input: str | list[str]
    viterbi: bool = False


class ClassifyRequest(Strict):
    input: str | list[str]


def field_name(loc: tuple[Any, ...]) -> str:
    """pydantic's error location as a client reads it: `messages[0].role`."""
    name = ""
    for part in loc:
        if isinstance(part, int):
            name += f"[{part}]"
        elif part in ("str", "list[str]", "list", "function-after", "constrained-str"):
            continue  # the branch of a union pydantic tried, not a field
        else:
            name += f".{part}" if name else str(part)
    return name


def parse(model: type[Strict], raw: bytes) -> Any:
    """The body as `model`, or ApiError(400) naming the first bad field."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the body is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"the body must be a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        param = field_name(first["loc"])
        if first["type"] == "missing":
            raise ApiError(400, f"'{param}' is required", param) from None
        got = first.get("input")
        shown = json.dumps(got)[:80] if not isinstance(got, dict) else "an object"
        raise ApiError(400, f"'{param}': {first['msg'].lower()} (got {shown})", param) from None


def stop_list(stop: str | list[str] | None) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > 4 or not all(stops):
        raise ApiError(400, "'stop': up to 4 non-empty strings", "stop")
    return stops
