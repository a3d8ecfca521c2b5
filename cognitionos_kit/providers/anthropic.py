"""Anthropic through the official ``anthropic`` SDK.

The Anthropic way: the system prompt is a top-level ``system`` field, never a message, and
``max_tokens`` is always sent. ``temperature`` is never sent: Anthropic deprecated it (current
Claude models answer 400, and the SDK no longer takes it), so the kit warns and leaves it out. Usage's ``input_tokens`` excludes prompt-cache reads and writes,
so the kit's prompt_tokens adds them back.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Iterator

from ..config import ProviderSettings
from ..types import ProviderRequest, ProviderResponse, Usage
from .base import LoopLocal, Provider, StreamItem, async_http_client, sync_http_client, translate_errors


class AnthropicProvider(Provider):
    """Messages via ``anthropic.Anthropic`` / ``anthropic.AsyncAnthropic`` (imported lazily)."""

    name = "anthropic"
    temperature_range = None  # deprecated by Anthropic: not sent

    def __init__(
        self, settings: ProviderSettings, *, timeout: float = 60.0, max_retries: int = 2,
        max_retry_wait: float | None = 20.0,
    ) -> None:
        self._settings = settings
        self._timeout = timeout
        self._max_retries = max_retries
        self._max_retry_wait = max_retry_wait
        self._client: Any = None
        self._aclients = LoopLocal()

    @property
    def configured(self) -> bool:
        return bool(self._settings.api_key)

    @property
    def base_url(self) -> str | None:
        return self._settings.base_url

    def _kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = dict(
            api_key=self._settings.api_key, timeout=self._timeout, max_retries=self._max_retries
        )
        if self._settings.base_url:
            kw["base_url"] = self._settings.base_url
        return kw

    @property
    def client(self) -> Any:
        if self._client is None:
            import anthropic

            self._client = anthropic.Anthropic(http_client=sync_http_client(anthropic, self._max_retry_wait), **self._kwargs())
        return self._client

    @property
    def aclient(self) -> Any:
        def make() -> Any:
            import anthropic

            return anthropic.AsyncAnthropic(
                http_client=async_http_client(anthropic, self._max_retry_wait), **self._kwargs()
            )

        return self._aclients.get(make)

    @staticmethod
    def _params(req: ProviderRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": req.model,
            "max_tokens": req.max_tokens,
            "messages": [{"role": m.role, "content": m.content} for m in req.messages],
        }
        if req.system:
            params["system"] = req.system
        if req.stream:
            params["stream"] = True
        return params

    @staticmethod
    def _usage(u: Any, output_tokens: int | None = None) -> Usage:
        read = getattr(u, "cache_read_input_tokens", None) or 0
        written = getattr(u, "cache_creation_input_tokens", None) or 0
        return Usage(
            prompt_tokens=(getattr(u, "input_tokens", None) or 0) + read + written,
            completion_tokens=output_tokens if output_tokens is not None else (getattr(u, "output_tokens", 0) or 0),
            cached_tokens=read,
            cache_write_tokens=written,
        )

    def _response(self, msg: Any) -> ProviderResponse:
        text = "".join(getattr(b, "text", "") for b in msg.content if getattr(b, "type", None) == "text")
        return ProviderResponse(
            content=text,
            model=msg.model or "",
            usage=self._usage(msg.usage),
            finish_reason=msg.stop_reason,
            response_id=msg.id,
        )

    def complete(self, req: ProviderRequest) -> ProviderResponse:
        with translate_errors(self.name, req.model):
            msg = self.client.messages.create(**self._params(req))
        return self._response(msg)

    async def acomplete(self, req: ProviderRequest) -> ProviderResponse:
        with translate_errors(self.name, req.model):
            msg = await self.aclient.messages.create(**self._params(req))
        return self._response(msg)

    def stream(self, req: ProviderRequest) -> Iterator[StreamItem]:
        acc = _EventAccumulator(req.model)
        with translate_errors(self.name, req.model):
            for event in self.client.messages.create(**self._params(req)):
                text = acc.feed(event)
                if text:
                    yield text
        yield acc.result()

    async def astream(self, req: ProviderRequest) -> AsyncIterator[StreamItem]:
        acc = _EventAccumulator(req.model)
        with translate_errors(self.name, req.model):
            async for event in await self.aclient.messages.create(**self._params(req)):
                text = acc.feed(event)
                if text:
                    yield text
        yield acc.result()


class _EventAccumulator:
    """Reads Messages stream events: input usage from message_start, output from message_delta."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.parts: list[str] = []
        self.start_usage: Any = None
        self.output_tokens: int | None = None
        self.stop_reason: str | None = None
        self.response_id: str | None = None

    def feed(self, event: Any) -> str:
        kind = getattr(event, "type", None)
        if kind == "message_start":
            self.start_usage = event.message.usage
            self.model = event.message.model or self.model
            self.response_id = event.message.id
        elif kind == "content_block_delta" and getattr(event.delta, "type", None) == "text_delta":
            self.parts.append(event.delta.text)
            return event.delta.text
        elif kind == "message_delta":
            self.stop_reason = getattr(event.delta, "stop_reason", None) or self.stop_reason
            usage = getattr(event, "usage", None)
            if usage is not None and getattr(usage, "output_tokens", None) is not None:
                self.output_tokens = usage.output_tokens
            if usage is not None and getattr(usage, "input_tokens", None) is not None:
                self.start_usage = usage  # newer API versions send cumulative input usage here too
        return ""

    def result(self) -> ProviderResponse:
        usage = AnthropicProvider._usage(self.start_usage, self.output_tokens or 0)
        if self.start_usage is None:
            usage.estimated = True
        return ProviderResponse(
            content="".join(self.parts),
            model=self.model,
            usage=usage,
            finish_reason=self.stop_reason,
            response_id=self.response_id,
        )
