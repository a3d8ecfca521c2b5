"""The JSON bodies of the team server's routes (pydantic: a bad field is a 422 that names it).

Unknown fields are refused, ``user_id`` among them: who a call is for comes from its token.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..core.errors import InvalidRequestError, redact

if TYPE_CHECKING:
    from ..core.types import Completion

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
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None
    thinking_budget: int | None = Field(default=None, ge=1024)
    cache: bool | Literal["deterministic", "refresh"] | None = None
    log_text: bool | None = None
    memory: bool = Field(default=False, description="put the caller's top k memories in the system prompt")
    k: int | None = Field(default=None, ge=1, le=50)
    project: str | None = Field(default=None, min_length=1, max_length=200, description="a label on the ledger row")
    session_id: str | None = Field(default=None, min_length=1, max_length=200,
                                   description="the client's session: a label on the ledger row")
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
        options = self.model_dump(exclude={"prompt", "messages", "stream", "memory", "project", "session_id"},
                                   exclude_none=True)
        if self.memory:
            options["memory"] = user_id
        return prompt, {**options, "user_id": user_id}

    def tags(self) -> dict[str, str]:
        """The labels the client asked for on its ledger rows (``project``, ``session_id``)."""
        return {k: v for k, v in (("project", self.project), ("session_id", self.session_id)) if v is not None}


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


# what a client cannot use or the server does not send: the turns of a tool loop and the parsed
# output (tools and output= are not served), the whole exchange (the client has its prompt)
_NOT_SENT = frozenset({"steps", "tool_results", "messages", "output", "tool_calls"})


def completion_json(c: Completion) -> dict[str, Any]:
    """What the server answers for a ``Completion``: every field but ``_NOT_SENT``, each attempt
    whole (errors redacted as in the ledger); a client Kit rebuilds the Completion from it."""
    body = {f.name: getattr(c, f.name) for f in fields(c) if f.name not in _NOT_SENT}
    body["attempts"] = [{**asdict(a), "error_message": a.error_message and redact(a.error_message)} for a in c.attempts]
    return body
