"""The JSON bodies of the team server's routes (pydantic: a bad field is a 422 that names it).

Unknown fields are refused, ``user_id`` among them: who a call is for comes from its token.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..core.errors import InvalidRequestError

__all__ = ["Message", "CompleteRequest", "EmbedRequest", "completion_json"]


class Message(BaseModel):
    """One chat message."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1)


class CompleteRequest(BaseModel):
    """``POST /complete``: a ``prompt`` or ``messages`` (not both), and the call's options."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = Field(default=None, min_length=1)
    messages: list[Message] | None = Field(default=None, min_length=1)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    role: Literal["planner", "executor", "critic", "summarizer"] | None = None
    system: str | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=200_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    max_cost: float | None = Field(default=None, gt=0)
    deadline: float | None = Field(default=None, gt=0, le=600)
    agent_id: str | None = Field(default=None, min_length=1, max_length=200)
    task_id: str | None = Field(default=None, min_length=1, max_length=200)
    stream: bool = False

    # InvalidRequestError is a ValueError: pydantic reports it as a 422 like any field error
    @model_validator(mode="after")
    def _one_prompt(self) -> CompleteRequest:
        if (self.prompt is None) == (self.messages is None):
            raise InvalidRequestError("give exactly one of prompt and messages")
        return self

    def call(self, user_id: str) -> tuple[str | list[dict[str, str]], dict[str, Any]]:
        """The prompt and keyword arguments of ``kit.complete`` for this body, on behalf of ``user_id``."""
        prompt: str | list[dict[str, str]] = (
            self.prompt if self.prompt is not None else [m.model_dump() for m in self.messages or []])
        options = self.model_dump(exclude={"prompt", "messages", "stream"}, exclude_none=True)
        return prompt, {**options, "user_id": user_id}


class EmbedRequest(BaseModel):
    """``POST /embed``: one text or a list of up to 256."""

    model_config = ConfigDict(extra="forbid")

    input: str | list[str] = Field(min_length=1)
    model: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _bounded(self) -> EmbedRequest:
        if isinstance(self.input, list) and len(self.input) > 256:
            raise InvalidRequestError("at most 256 texts per request")
        return self


def completion_json(c: Any) -> dict[str, Any]:
    """What the server answers for a ``Completion``."""
    return {
        "content": c.content, "model": c.model, "provider": c.provider, "requested_model": c.requested_model,
        "substituted": c.substituted, "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
        "cost_usd": c.cost_usd, "latency_ms": c.latency_ms, "request_id": c.request_id,
        "finish_reason": c.finish_reason, "cache_hit": c.cache_hit,
        "attempts": [{"provider": a.provider, "model": a.model, "status": a.status, "error_type": a.error_type}
                     for a in c.attempts],
    }
