"""OpenAI's wire format for the ``/v1`` routes: the request bodies (checked by pydantic) mapped to
``kit.complete`` options, and a ``Completion`` as ``chat.completion`` / ``chat.completion.chunk``.

Only what the kit can honour is accepted; a field it cannot is refused by name (``unsupported``),
never silently dropped. ``user`` is read and ignored: the call's ``user_id`` is the token's user.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..core.errors import InvalidRequestError

__all__ = ["ChatRequest", "EmbeddingsRequest", "OpenAIError", "chat_json", "chunk_json", "usage_json", "kit_note",
           "unsupported"]

_IMAGE_URL = ("http://", "https://", "data:image/")


class OpenAIError(Exception):
    """An error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with ``status``."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


# InvalidRequestError is a ValueError: pydantic reports it as a field error (a 400 naming the field)
class ImageURL(_Strict):
    url: str
    detail: Literal["auto", "low", "high"] = "auto"

    @field_validator("url")
    @classmethod
    def _remote(cls, url: str) -> str:
        if not url.startswith(_IMAGE_URL):  # never a path: the server's own files are not for reading
            raise InvalidRequestError("an image is an http(s) URL or a data:image/... URL")
        return url


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageURL


Part = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ToolFunction(_Strict):
    name: str
    arguments: str = "{}"


class ToolCallIn(_Strict):
    id: str
    type: Literal["function"] = "function"
    function: ToolFunction


class ChatMessage(_Strict):
    """One message in OpenAI's chat format (``developer`` is taken as ``system``)."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[Part] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None

    def as_kit(self) -> dict[str, Any]:
        role = "system" if self.role == "developer" else self.role
        out: dict[str, Any] = {"role": role}
        content = self.content
        if isinstance(content, list) and role != "user":  # only a user message carries images
            if any(isinstance(p, ImagePart) for p in content):
                raise OpenAIError(400, f"only a user message may hold images, not a {self.role} message",
                                  param="messages", code="invalid_value")
            content = "\n".join(p.text for p in content if isinstance(p, TextPart))
        out["content"] = ([p.model_dump() for p in content] if isinstance(content, list) else content)
        if self.tool_calls:
            out["tool_calls"] = [c.model_dump() for c in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if role == "tool" and self.name:
            out["name"] = self.name
        return out


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="allow")  # description, parameters, strict: the kit checks them
    name: str


class ToolSpec(_Strict):
    type: Literal["function"]
    function: FunctionSpec


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: ToolFunction | dict[str, str]


class JSONSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="allow")  # description, strict
    name: str
    schema_: dict[str, Any] = Field(alias="schema")


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatRequest(BaseModel):
    """``POST /v1/chat/completions``. Fields the kit does not serve land in ``model_extra``;
    ``unsupported`` names them. ``max_cost``, ``deadline``, ``agent_id`` and ``task_id`` are the
    kit's own options (an OpenAI client sends them in ``extra_body``)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=200_000)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=200_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None
    n: Literal[1] | None = None
    tools: list[ToolSpec] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    response_format: ResponseFormat | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # ignored: the token says who calls
    max_cost: float | None = Field(default=None, gt=0)
    deadline: float | None = Field(default=None, gt=0, le=600)
    agent_id: str | None = Field(default=None, min_length=1, max_length=200)
    task_id: str | None = Field(default=None, min_length=1, max_length=200)

    def call(self, user_id: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The prompt and ``kit.complete`` options of this body, for ``user_id``."""
        if self.max_tokens is not None and self.max_completion_tokens is not None \
                and self.max_tokens != self.max_completion_tokens:
            raise OpenAIError(400, "max_tokens and max_completion_tokens differ: give one",
                              param="max_completion_tokens", code="invalid_value")
        options: dict[str, Any] = self.model_dump(
            include={"model", "temperature", "top_p", "seed", "stop", "frequency_penalty", "presence_penalty",
                     "reasoning_effort", "max_cost", "deadline", "agent_id", "task_id"}, exclude_none=True)
        options["user_id"] = user_id
        if (mt := self.max_completion_tokens or self.max_tokens) is not None:
            options["max_tokens"] = mt
        if self.tools:
            options["tools"] = [t.model_dump() for t in self.tools]
        if isinstance(self.tool_choice, NamedToolChoice):
            fn = self.tool_choice.function
            options["tool_choice"] = fn.name if isinstance(fn, ToolFunction) else fn.get("name")
        elif self.tool_choice is not None:
            options["tool_choice"] = self.tool_choice
        rf = self.response_format
        if rf is not None and rf.type == "json_object":
            options["output"] = {"type": "object"}
        elif rf is not None and rf.type == "json_schema":
            if rf.json_schema is None:
                raise OpenAIError(400, "response_format json_schema needs its json_schema (a name and a schema)",
                                  param="response_format", code="invalid_value")
            options["output"] = rf.json_schema.schema_
        return [m.as_kit() for m in self.messages], options


class EmbeddingsRequest(BaseModel):
    """``POST /v1/embeddings``: text (not token arrays), up to 256 inputs."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=200)
    input: str | list[str] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None  # ignored, as in chat

    @field_validator("input")
    @classmethod
    def _bounded(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) > 256:
            raise InvalidRequestError("at most 256 inputs per request")
        return value


def unsupported(body: BaseModel) -> str | None:
    """The first field the kit does not serve with a value that asks for something (a null, a
    ``false`` or an empty object asks for nothing: clients send those for options left at the default)."""
    return next((k for k, v in (body.model_extra or {}).items() if v is not None and v is not False and v != {}), None)


_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
           "stop": "stop", "length": "length", "tool_calls": "tool_calls", "content_filter": "content_filter"}


def _finish(c: Any) -> str:
    if c.tool_calls:
        return "tool_calls"
    return _FINISH.get(c.finish_reason or "stop", "stop")


def kit_note(c: Any) -> dict[str, Any]:
    """The ``cognitionos`` field: who answered, whether it stands in for what was asked, the cost."""
    return {"provider": c.provider, "model": c.model, "requested_provider": c.requested_provider,
            "requested_model": c.requested_model, "substituted": c.substituted, "note": c.substitute_note,
            "cost_usd": c.cost_usd, "latency_ms": c.latency_ms, "request_id": c.request_id, "cache_hit": c.cache_hit,
            "attempts": [{"provider": a.provider, "model": a.model, "status": a.status, "error_type": a.error_type}
                         for a in c.attempts]}


def usage_json(c: Any) -> dict[str, Any]:
    return {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens, "total_tokens": c.total_tokens,
            "prompt_tokens_details": {"cached_tokens": c.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": c.reasoning_tokens}}


def fingerprint(c: Any) -> str:
    return f"cognitionos:{c.provider}" + (":substituted" if c.substituted else "")


def _tool_calls(c: Any, *, indexed: bool = False) -> list[dict[str, Any]]:
    return [{**({"index": i} if indexed else {}), "id": t.id, "type": "function",
             "function": {"name": t.name, "arguments": t.arguments_json}} for i, t in enumerate(c.tool_calls)]


def chat_json(c: Any) -> dict[str, Any]:
    """A ``Completion`` as OpenAI's ``chat.completion``; ``model`` is the model that answered."""
    message: dict[str, Any] = {"role": "assistant", "content": c.content if c.content or not c.tool_calls else None,
                               "refusal": None}
    if c.tool_calls:
        message["tool_calls"] = _tool_calls(c)
    return {"id": "chatcmpl-" + c.request_id, "object": "chat.completion", "created": int(time.time()),
            "model": c.model, "system_fingerprint": fingerprint(c),
            "choices": [{"index": 0, "message": message, "finish_reason": _finish(c), "logprobs": None}],
            "usage": usage_json(c), "cognitionos": kit_note(c)}


def chunk_json(chunk_id: str, model: str, created: int, *, delta: dict[str, Any] | None = None,
               finish: Any = None, usage: Any = None) -> dict[str, Any]:
    """One ``chat.completion.chunk``: a ``delta``; or, with ``finish`` (the Completion), the last
    choice (tool calls, finish_reason) named for the model that answered, with the ``cognitionos``
    field; or, with ``usage``, the usage chunk (no choices)."""
    out: dict[str, Any] = {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": model}
    if usage is not None:
        out.update(model=usage.model, system_fingerprint=fingerprint(usage), choices=[], usage=usage_json(usage),
                   cognitionos=kit_note(usage))
    elif finish is not None:
        last: dict[str, Any] = {"tool_calls": _tool_calls(finish, indexed=True)} if finish.tool_calls else {}
        out.update(model=finish.model, system_fingerprint=fingerprint(finish), cognitionos=kit_note(finish),
                   choices=[{"index": 0, "delta": last, "finish_reason": _finish(finish), "logprobs": None}])
    else:
        out["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": None, "logprobs": None}]
    return out
