"""Anthropic through the official ``anthropic`` SDK.

The Anthropic way: the system prompt is a top-level ``system`` field, never a message, and
``max_tokens`` is always sent. ``temperature`` is never sent: Anthropic deprecated it (current
Claude models answer 400, and the SDK no longer takes it), so the kit warns and leaves it out.
Usage's ``input_tokens`` excludes prompt-cache reads and writes, so the kit's prompt_tokens adds
them back.

Requests go through the SDK client's public ``post`` to ``/v1/messages`` (the path
``messages.create`` posts to, with the same client, headers, retries and errors), and the kit
reads the raw JSON and raw stream events itself: an answer without ``content``, without usage or
with a garbage event becomes a clear ``bad_response`` (or estimated usage), never a bare
TypeError, and no pydantic model is built on the first call of a process.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ...core.types import Message, ProviderRequest, ProviderResponse, Sampling, ToolCall, ToolDef, Usage
from .. import tokens
from .base import SDKProvider, SSEAccumulator, StreamItem, bad_response, incomplete_stream, translate_errors

_PATH = "/v1/messages"


class AnthropicProvider(SDKProvider):
    """Messages via ``anthropic.Anthropic`` / ``anthropic.AsyncAnthropic`` (imported lazily)."""

    name = "anthropic"
    temperature_range = None  # deprecated by Anthropic: not sent
    # no top_p, penalties or log-probabilities in the Messages API any more; effort goes in output_config
    accepts = frozenset({"stop", "reasoning_effort", "thinking_budget", "cache_prompt", "output", "tools", "tool_choice",
                         "extra_body"})

    def unsupported(self, sampling: Sampling, model: str) -> tuple[str, ...]:
        """As ``accepts`` says; of the efforts, Anthropic has low, medium and high (no "minimal")."""
        return tuple(n for n in sampling.given() if n not in self.accepts
                     or (n == "reasoning_effort" and sampling.reasoning_effort == "minimal"))
    sdk_module, sync_client_name, async_client_name = "anthropic", "Anthropic", "AsyncAnthropic"
    models_path = "/v1/models"

    @property
    def configured(self) -> bool:
        return bool(self._settings.api_key)

    def _kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = dict(
            api_key=self.api_key, timeout=self._timeout, max_retries=self._max_retries
        )
        if self._settings.base_url:
            kw["base_url"] = self._settings.base_url
        return kw

    @staticmethod
    def _params(req: ProviderRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": req.model,
            "max_tokens": req.max_tokens,
            "messages": [{"role": m.role, "content": m.content} for m in req.messages]
            if not any(m.tool_calls or m.images or m.tool_call_id for m in req.messages) else _messages(req.messages),
        }
        if req.system:
            params["system"] = req.system
        if req.stream:
            params["stream"] = True
        s = req.sampling
        if s is not None:
            if s.stop is not None:
                params["stop_sequences"] = list(s.stop)
            if s.reasoning_effort is not None:
                params["output_config"] = {"effort": s.reasoning_effort}
            if s.output is not None:
                params["output_config"] = {**params.get("output_config", {}), "format": s.output.anthropic_format()}
            if s.tools:
                params["tools"] = [_tool(t) for t in s.tools]
            if s.tool_choice is not None:
                params["tool_choice"] = {"type": {"required": "any"}.get(s.tool_choice, s.tool_choice)} \
                    if s.tool_choice in ("auto", "required", "none") else {"type": "tool", "name": s.tool_choice}
            if s.thinking_budget is not None:
                params["thinking"] = {"type": "enabled", "budget_tokens": s.thinking_budget}
            if s.cache_prompt:
                _mark_cache(params, s.cache_prompt)
            params.update(s.extra_body)  # as the SDK's extra_body= does: top-level fields of the body
        return params

    @staticmethod
    def _usage(u: Any, output_tokens: Any = None) -> Usage:
        """Usage from a JSON ``usage`` object; missing parts are marked for the kit to count."""
        if not isinstance(u, dict):
            u = {}
        def n(key: str) -> int | None:
            v = u.get(key)
            return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None
        inp, read, written = n("input_tokens"), n("cache_read_input_tokens") or 0, n("cache_creation_input_tokens") or 0
        out = output_tokens if isinstance(output_tokens, int) and output_tokens >= 0 else n("output_tokens")
        return Usage(
            prompt_tokens=(inp or 0) + read + written,
            completion_tokens=out or 0,
            cached_tokens=read,
            cache_write_tokens=written,
            estimated=inp is None or out is None,
        )

    def _response(self, raw: Any, req: ProviderRequest) -> ProviderResponse:
        ctype = raw.headers.get("content-type", "")
        if "json" not in ctype.lower():
            raise bad_response(self.name, req.model, f"the server answered with content type {ctype or 'none'!r}, "
                                                     f"not JSON ({raw.text[:80]!r})")
        try:
            msg = json.loads(raw.content)
        except ValueError as exc:
            raise bad_response(self.name, req.model, f"the server's answer is not valid JSON ({exc})") from None
        if not isinstance(msg, dict):
            raise bad_response(self.name, req.model, f"the server's answer is not a JSON object ({str(msg)[:80]!r})")
        return self.batch_response(msg, req)

    def batch_params(self, req: ProviderRequest) -> dict[str, Any]:
        """The ``params`` of ``req`` in a Message Batches request (the Messages body)."""
        return self._params(req)

    def batch_response(self, msg: dict[str, Any], req: ProviderRequest) -> ProviderResponse:
        """A Message (a live answer's JSON, or a batch result's ``message``) as the kit's response."""
        content = msg.get("content")
        if not isinstance(content, list):
            raise bad_response(self.name, req.model, f"the answer has no content list ({str(msg)[:120]!r})")
        text = "".join(b["text"] for b in content
                       if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str))
        thinking = "".join(b["thinking"] for b in content
                           if isinstance(b, dict) and b.get("type") == "thinking" and isinstance(b.get("thinking"), str))
        stop = msg.get("stop_reason")
        calls = []
        for b in content:
            if isinstance(b, dict) and b.get("type") == "tool_use":
                if not isinstance(b.get("id"), str) or not isinstance(b.get("name"), str):
                    raise bad_response(self.name, req.model, f"a tool_use block has no id or name ({str(b)[:80]!r})")
                calls.append(ToolCall.of(b["id"], b["name"], b.get("input") if isinstance(b.get("input"), dict) else {}))
        return ProviderResponse(
            content=text,
            model=str(msg.get("model") or ""),
            usage=_with_thinking(self._usage(msg.get("usage")), thinking, req.model),
            finish_reason=stop if isinstance(stop, str) else None,
            response_id=msg.get("id") if isinstance(msg.get("id"), str) else None,
            tool_calls=tuple(calls),
        )

    def complete(self, req: ProviderRequest) -> ProviderResponse:
        params, cast = self._params(req), self._response_class()
        with translate_errors(self.name, req.model):
            raw = self.client.post(_PATH, body=params, cast_to=cast)
        return self._response(raw, req)

    async def acomplete(self, req: ProviderRequest) -> ProviderResponse:
        params, cast = self._params(req), self._response_class()
        with translate_errors(self.name, req.model):
            raw = await self.aclient.post(_PATH, body=params, cast_to=cast)
        return self._response(raw, req)

    stream_type = "text/event-stream"

    def _accumulator(self, req: ProviderRequest) -> _EventAccumulator:
        acc = _EventAccumulator(self.name, req.model)
        acc.stream_type = self.stream_type
        return acc

    def stream(self, req: ProviderRequest) -> Iterator[StreamItem]:
        yield from self.sse(self._accumulator(req), _PATH, self._params(req))

    async def astream(self, req: ProviderRequest) -> AsyncIterator[StreamItem]:
        async for item in self.asse(self._accumulator(req), _PATH, self._params(req)):
            yield item


class _EventAccumulator(SSEAccumulator):
    """Reads Messages stream events (raw JSON): input usage from message_start, output from
    message_delta, completion from message_stop (a stream without it is ``incomplete_stream``)."""

    def __init__(self, provider: str, model: str) -> None:
        super().__init__(provider, model)
        self.start_usage: Any = None
        self.output_tokens: int | None = None
        self.stop_reason: str | None = None
        self.stopped = False
        self.thinking: list[str] = []  # extended thinking: not the answer, but billed as output
        self.calls: dict[int, list[str]] = {}  # block index -> [id, name, input JSON pieces...]

    def feed(self, event: Any) -> str:
        event = self.event(event)
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message")
            if not isinstance(message, dict):
                raise bad_response(self.provider, self.requested, "message_start without a message")
            self.start_usage = message.get("usage")
            self.model = str(message.get("model") or self.model)
            self.response_id = message.get("id") if isinstance(message.get("id"), str) else None
        elif kind == "content_block_start":
            block = event.get("content_block")
            if isinstance(block, dict) and block.get("type") == "tool_use":  # not server tools: the server runs those
                if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                    raise bad_response(self.provider, self.requested, f"a tool_use block has no id or name ({str(block)[:80]!r})")
                self.calls[int(event.get("index") or 0)] = [block["id"], block["name"]]
        elif kind == "content_block_delta":
            delta = event.get("delta")
            if isinstance(delta, dict) and delta.get("type") == "input_json_delta" and event.get("index") in self.calls:
                self.calls[event["index"]].append(str(delta.get("partial_json") or ""))
            if isinstance(delta, dict) and delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
                self.parts.append(delta["text"])
                return delta["text"]
            if isinstance(delta, dict) and delta.get("type") == "thinking_delta" and isinstance(delta.get("thinking"), str):
                self.thinking.append(delta["thinking"])
        elif kind == "message_delta":
            delta = event.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                self.stop_reason = delta["stop_reason"]
            usage = event.get("usage")
            if isinstance(usage, dict):
                if isinstance(usage.get("output_tokens"), int):
                    self.output_tokens = usage["output_tokens"]
                if isinstance(usage.get("input_tokens"), int):
                    self.start_usage = usage  # newer API versions send cumulative input usage here too
        elif kind == "message_stop":
            self.stopped = True
        elif kind is None:
            raise bad_response(self.provider, self.requested, f"a stream event has no type ({str(event)[:80]!r})")
        return ""

    def result(self) -> ProviderResponse:
        if not self.stopped:
            what = "no events" if not self.events else f"{self.events} event(s) and no message_stop"
            raise incomplete_stream(self.provider, self.requested, what)
        return ProviderResponse(
            content="".join(self.parts),
            model=self.model,
            usage=_with_thinking(AnthropicProvider._usage(self.start_usage, self.output_tokens), "".join(self.thinking),
                                 self.requested),
            finish_reason=self.stop_reason,
            response_id=self.response_id,
            tool_calls=tuple(ToolCall.of(e[0], e[1], "".join(e[2:]) or "{}") for _, e in sorted(self.calls.items())),
        )


def _with_thinking(usage: Usage, thinking: str, model: str) -> Usage:
    """Anthropic bills thinking inside ``output_tokens`` and reports no separate count: the
    thinking text is counted locally (tiktoken, an estimate) as ``reasoning_tokens``."""
    if thinking:
        usage.reasoning_tokens = min(tokens.count_text(thinking, model), usage.completion_tokens or 10**9)
    return usage


_EPHEMERAL = {"type": "ephemeral"}


def _mark_cache(params: dict[str, Any], marks: tuple[int | str, ...]) -> None:
    """Anthropic's prompt caching: a ``cache_control`` breakpoint on the system prompt and on the
    chosen messages (the prompt up to each breakpoint is cached), written as text blocks."""
    if "system" in marks and params.get("system"):
        params["system"] = [{"type": "text", "text": params["system"], "cache_control": _EPHEMERAL}]
    messages = params["messages"]
    for i in (m for m in marks if isinstance(m, int)):
        if -len(messages) <= i < len(messages):
            m = messages[i]
            if isinstance(m["content"], list):
                m["content"][-1] = {**m["content"][-1], "cache_control": _EPHEMERAL}
            else:
                m["content"] = [{"type": "text", "text": m["content"], "cache_control": _EPHEMERAL}]


def _tool(t: ToolDef) -> dict[str, Any]:
    out: dict[str, Any] = {"name": t.name, "description": t.description, "input_schema": t.parameters}
    if t.strict is not None:
        out["strict"] = t.strict
    return out


def _messages(turns: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Turns with tool calls, tool results or images as Messages content blocks: tool calls are
    ``tool_use`` blocks of the assistant turn; consecutive tool results make one user turn of
    ``tool_result`` blocks; images come before the text of their turn (as Anthropic advises)."""
    out: list[dict[str, Any]] = []
    for m in turns:
        if m.role == "tool":
            block = {"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content, "is_error": m.is_error}
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list) \
                    and out[-1]["content"] and out[-1]["content"][-1].get("type") == "tool_result":
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
        elif m.tool_calls:
            blocks: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
            blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in m.tool_calls]
            out.append({"role": "assistant", "content": blocks})
        elif m.images:
            blocks = [{"type": "image", "source": {"type": "url", "url": i.url} if i.url is not None else
                       {"type": "base64", "media_type": i.media_type, "data": i.base64}} for i in m.images]
            if m.content:
                blocks.append({"type": "text", "text": m.content})
            out.append({"role": m.role, "content": blocks})
        else:
            out.append({"role": m.role, "content": m.content})
    return out
