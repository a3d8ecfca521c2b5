"""OpenAI (and any OpenAI-compatible server) through the official ``openai`` SDK."""

from __future__ import annotations

from typing import Any, AsyncIterator, Iterator

from ..config import ProviderSettings
from ..errors import ProviderError
from ..types import ProviderRequest, ProviderResponse, Usage
from .base import LoopLocal, Provider, StreamItem, async_http_client, sync_http_client, translate_errors

# Reasoning models take max_completion_tokens; older and compatible servers take max_tokens.
_COMPLETION_TOKENS_PREFIXES = ("o1", "o3", "o4", "gpt-5")

# Plain (non-streaming) completions go through the SDK client's public ``post``: same auth,
# base URL, headers, retry loop, timeouts and error classes as ``chat.completions.create``, minus
# two per-call costs that buy nothing for the kit's requests. ``create`` re-walks its TypedDict
# annotations to transform the params (about 0.4 ms of CPU per call; an identity for text
# messages) and builds a pydantic ChatCompletion (about 0.3 ms) of which the kit reads five
# fields. ``cast_to=object`` hands back the parsed JSON. tests/test_wire.py checks that
# both paths put the same request on the wire.
_CHAT_PATH = "/chat/completions"
_CHAT_OPTIONS: dict[str, Any] = {"security": {"bearer_auth": True}}


class OpenAIProvider(Provider):
    """Chat completions and embeddings via ``openai.OpenAI`` / ``openai.AsyncOpenAI``.

    The SDK's own retry loop (``max_retries``, honouring ``Retry-After``) is the only one: the
    fallback chain never retries the same provider again.
    """

    name = "openai"
    temperature_range = (0.0, 2.0)

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
        # a base URL alone is enough: local servers (Ollama, vLLM, llama.cpp) need no key
        return bool(self._settings.api_key or self._settings.base_url)

    @property
    def base_url(self) -> str | None:
        return self._settings.base_url

    def _kwargs(self) -> dict[str, Any]:
        return dict(
            api_key=self._settings.api_key or "no-key-needed",
            base_url=self._settings.base_url,
            timeout=self._timeout,
            max_retries=self._max_retries,
        )

    @property
    def client(self) -> Any:
        if self._client is None:
            import openai

            self._client = openai.OpenAI(http_client=sync_http_client(openai, self._max_retry_wait), **self._kwargs())
        return self._client

    @property
    def aclient(self) -> Any:
        def make() -> Any:
            import openai

            return openai.AsyncOpenAI(http_client=async_http_client(openai, self._max_retry_wait), **self._kwargs())

        return self._aclients.get(make)

    # --- request / response mapping ---------------------------------------------------
    @staticmethod
    def _params(req: ProviderRequest) -> dict[str, Any]:
        messages = [{"role": "system", "content": req.system}] if req.system else []
        messages += [{"role": m.role, "content": m.content} for m in req.messages]
        params: dict[str, Any] = {"model": req.model, "messages": messages}
        if req.model.startswith(_COMPLETION_TOKENS_PREFIXES):
            params["max_completion_tokens"] = req.max_tokens
        else:
            params["max_tokens"] = req.max_tokens
        if req.temperature is not None:
            params["temperature"] = req.temperature
        if req.seed is not None:
            params["seed"] = req.seed
        if req.stream:
            params["stream"] = True
            params["stream_options"] = {"include_usage": True}
        return params

    @staticmethod
    def _usage(u: Any) -> Usage:
        if u is None:
            return Usage(estimated=True)
        details = getattr(u, "prompt_tokens_details", None)
        cached = getattr(details, "cached_tokens", None) or 0
        return Usage(
            prompt_tokens=u.prompt_tokens or 0,
            completion_tokens=u.completion_tokens or 0,
            cached_tokens=cached,
        )

    @staticmethod
    def _json_usage(u: Any) -> Usage:
        if not isinstance(u, dict):
            return Usage(estimated=True)
        details = u.get("prompt_tokens_details") or {}
        return Usage(
            prompt_tokens=u.get("prompt_tokens") or 0,
            completion_tokens=u.get("completion_tokens") or 0,
            cached_tokens=(details.get("cached_tokens") if isinstance(details, dict) else 0) or 0,
        )

    def _response(self, data: Any, req: ProviderRequest) -> ProviderResponse:
        """Map a chat-completions JSON body (a dict) to the kit's response."""
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise ProviderError(
                f"{self.name}/{req.model}: the server answered with something that is not a chat completion "
                f"({str(data)[:120]!r}); check OPENAI_BASE_URL points at an OpenAI-compatible /v1 endpoint",
                provider=self.name, model=req.model, error_type="bad_response", retryable=True,
            )
        choices = data.get("choices") or []
        choice = choices[0] if choices and isinstance(choices[0], dict) else {}
        message = choice.get("message") or {}
        return ProviderResponse(
            content=message.get("content") or "",
            model=data.get("model") or "",
            usage=self._json_usage(data.get("usage")),
            finish_reason=choice.get("finish_reason"),
            response_id=data.get("id"),
        )

    # --- calls ------------------------------------------------------------------------
    def complete(self, req: ProviderRequest) -> ProviderResponse:
        with translate_errors(self.name, req.model):
            data = self.client.post(_CHAT_PATH, body=self._params(req), cast_to=object, options=_CHAT_OPTIONS)
        return self._response(data, req)

    async def acomplete(self, req: ProviderRequest) -> ProviderResponse:
        with translate_errors(self.name, req.model):
            data = await self.aclient.post(_CHAT_PATH, body=self._params(req), cast_to=object, options=_CHAT_OPTIONS)
        return self._response(data, req)

    def stream(self, req: ProviderRequest) -> Iterator[StreamItem]:
        acc = _StreamAccumulator(req.model)
        with translate_errors(self.name, req.model):
            for chunk in self.client.chat.completions.create(**self._params(req)):
                text = acc.feed(chunk)
                if text:
                    yield text
        yield acc.result(self._usage)

    async def astream(self, req: ProviderRequest) -> AsyncIterator[StreamItem]:
        acc = _StreamAccumulator(req.model)
        with translate_errors(self.name, req.model):
            async for chunk in await self.aclient.chat.completions.create(**self._params(req)):
                text = acc.feed(chunk)
                if text:
                    yield text
        yield acc.result(self._usage)

    # --- embeddings -------------------------------------------------------------------
    def embed(self, texts: list[str], model: str) -> tuple[list[list[float]], Usage, str]:
        with translate_errors(self.name, model):
            resp = self.client.embeddings.create(model=model, input=texts)
        vectors = [d.embedding for d in sorted(resp.data, key=lambda d: d.index)]
        tokens = getattr(resp.usage, "prompt_tokens", 0) or 0
        return vectors, Usage(prompt_tokens=tokens), resp.model or model


class _StreamAccumulator:
    """Collects a chat-completions stream: text so far, the final usage chunk, finish reason."""

    def __init__(self, model: str) -> None:
        self.parts: list[str] = []
        self.model = model
        self.usage: Any = None
        self.finish_reason: str | None = None
        self.response_id: str | None = None

    def feed(self, chunk: Any) -> str:
        self.response_id = self.response_id or getattr(chunk, "id", None)
        self.model = getattr(chunk, "model", None) or self.model
        if getattr(chunk, "usage", None) is not None:
            self.usage = chunk.usage
        text = ""
        for choice in chunk.choices or ():
            if choice.delta and choice.delta.content:
                text += choice.delta.content
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
        if text:
            self.parts.append(text)
        return text

    def result(self, to_usage) -> ProviderResponse:
        return ProviderResponse(
            content="".join(self.parts),
            model=self.model,
            usage=to_usage(self.usage),  # estimated=True when the server sent no usage chunk
            finish_reason=self.finish_reason,
            response_id=self.response_id,
        )
