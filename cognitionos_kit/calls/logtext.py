"""What the text log keeps of one attempt (``storage.textlog``): the request's messages, system
prompt and parameters (with its first attempt), the answer or the error, passed through the
user's redaction hook and the kit's own key redaction first."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from ..core.errors import redact

if TYPE_CHECKING:
    from ..core.types import Attempt, Message, ProviderRequest, ProviderResponse
    from .plan import CallPlan
    from .policy import Step

__all__ = ["log_row"]

Redact = Callable[[str], str]


def log_row(call: CallPlan, step: Step, attempt: Attempt, resp: ProviderResponse | None, ledger_row: dict[str, Any],
            hook: Redact | None, *, answer: str | None = None) -> dict[str, Any]:
    """The text log row of one attempt (``ledger_row``: its accounting row, for the numbers)."""
    done: dict[str, str] = {}  # the last user message is both the prompt and in the messages: cleaned once

    def clean(text: str | None) -> str | None:
        if text is None:
            return None
        if text in done:
            return done[text]
        out = hook(text) if hook is not None else text
        done[text] = cleaned = redact(out if isinstance(out, str) else str(out))
        return cleaned

    req = step.request
    row: dict[str, Any] = {k: ledger_row.get(k) for k in (
        "ts", "request_id", "attempt", "trace_id", "kind", "user_id", "role", "experiment_id", "run_id", "provider",
        "model", "status", "cost_usd", "latency_ms", "prompt_tokens", "completion_tokens", "project", "session_id")}
    row["error"] = clean(attempt.error_message)
    if answer is not None:  # a cache hit: the stored answer
        row["answer"] = clean(answer)
    if resp is not None:
        row["answer"] = clean(resp.content)
        if resp.tool_calls:
            row["tool_calls"] = _json([{"id": c.id, "name": c.name, "arguments": clean(c.arguments_json)}
                                       for c in resp.tool_calls])
    if attempt.number == 1:  # the request itself, once
        last_user = next((m for m in reversed(req.messages) if m.role == "user"), None)
        row["prompt"] = clean(last_user.content) if last_user is not None else None
        row["system"] = clean(req.system)
        row["messages"] = _json([_message(m, clean) for m in req.messages])
        row["params"] = _json(_params(req))
    return row


def _json(value: Any) -> str:
    """Compact JSON text (orjson, as the journal; json for what it refuses, e.g. a lone surrogate)."""
    try:
        return orjson.dumps(value, default=str).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, ensure_ascii=False, default=str)


def _message(m: Message, clean: Callable[[str | None], str | None]) -> dict[str, Any]:
    d = m.as_dict()
    d["content"] = clean(m.content)
    if m.images:  # described, not stored: the log stays small and holds no image data
        d["images"] = [i.url or f"{i.media_type} {i.width}x{i.height} sha256:{i.digest[:16]}" for i in m.images]
    for c in d.get("tool_calls", ()):
        c["function"]["arguments"] = clean(c["function"]["arguments"])
    return d


def _params(req: ProviderRequest) -> dict[str, Any]:
    out: dict[str, Any] = {"model": req.model, "max_tokens": req.max_tokens}
    if req.temperature is not None:
        out["temperature"] = req.temperature
    if req.seed is not None:
        out["seed"] = req.seed
    if req.sampling is not None:
        out.update(req.sampling.as_dict())
    return out
