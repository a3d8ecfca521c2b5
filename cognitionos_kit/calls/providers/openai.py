"""OpenAI (and any OpenAI-compatible server) through the official ``openai`` SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ...core.types import Message, ProviderRequest, ProviderResponse, Sampling, ToolCall, Usage
from .base import SDKProvider, SSEAccumulator, StreamItem, bad_response, incomplete_stream, translate_errors

# Reasoning models take max_completion_tokens; older and compatible servers take max_tokens.
_COMPLETION_TOKENS_PREFIXES = ("o1", "o3", "o4", "gpt-5")

# Completions go through the SDK client's public ``post``: same auth, base URL, headers, retry
# loop, timeouts and error classes as ``chat.completions.create``, minus two per-call costs that
# buy nothing for the kit's requests. ``create`` re-walks its TypedDict annotations to transform
# the params (CPU on every call for what is an identity for text messages) and builds pydantic
# models of which the kit reads five fields (both measured by benchmarks/bench_choices.py;
# figures in the README). The kit reads the raw body itself, so that an answer
# it cannot use (not JSON, wrong content type, no choices, a stream without its finish) is a clear
# ``bad_response`` that falls back, never a bare JSONDecodeError or an empty "success".
# tests/test_wire.py checks that both paths put the same request on the wire.
_CHAT_PATH = "/chat/completions"
_CHAT_OPTIONS: dict[str, Any] = {"security": {"bearer_auth": True}}


class OpenAIProvider(SDKProvider):
    """Chat completions and embeddings via ``openai.OpenAI`` / ``openai.AsyncOpenAI``.

    The SDK's own retry loop (``max_retries``, honouring ``Retry-After``) is the only one: the
    fallback chain never retries the same provider again.
    """

    name = "openai"
    temperature_range = (0.0, 2.0)
    # cache_prompt: OpenAI caches prompt prefixes of 1,024 tokens and more by itself (nothing to send)
    accepts = frozenset({"stop", "top_p", "frequency_penalty", "presence_penalty", "logprobs", "reasoning_effort",
                         "cache_prompt", "output", "tools", "tool_choice", "extra_body"})
    sdk_module, sync_client_name, async_client_name = "openai", "OpenAI", "AsyncOpenAI"

    @property
    def configured(self) -> bool:
        # a base URL alone is enough: local servers (Ollama, vLLM, llama.cpp) need no key
        return bool(self._settings.api_key or self._settings.base_url)

    url_hint = "check OPENAI_BASE_URL points at an OpenAI-compatible /v1 endpoint"  # a named endpoint says its own

    def _kwargs(self) -> dict[str, Any]:
        return dict(
            api_key=self.api_key or "no-key-needed",
            base_url=self._settings.base_url,
            timeout=self._timeout,
            max_retries=self._max_retries,
        )

    # --- request / response mapping ---------------------------------------------------
    @staticmethod
    def _params(req: ProviderRequest) -> dict[str, Any]:
        messages = [{"role": "system", "content": req.system}] if req.system else []
        messages += [{"role": m.role, "content": m.content} if not (m.tool_calls or m.images or m.tool_call_id)
                     else _message(m) for m in req.messages]
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
        s = req.sampling
        if s is not None:
            if s.stop is not None:
                params["stop"] = list(s.stop)
            for name in ("top_p", "frequency_penalty", "presence_penalty", "reasoning_effort"):
                if getattr(s, name) is not None:
                    params[name] = getattr(s, name)
            if s.output is not None:
                params["response_format"] = s.output.openai_format()
            if s.tools:
                params["tools"] = [{"type": "function", "function": t.as_dict()} for t in s.tools]
            if s.tool_choice is not None:
                params["tool_choice"] = s.tool_choice if s.tool_choice in ("auto", "required", "none") else {
                    "type": "function", "function": {"name": s.tool_choice}}
            if s.logprobs is not None:
                params["logprobs"] = True
                if s.logprobs:
                    params["top_logprobs"] = s.logprobs
            params.update(s.extra_body)  # as the SDK's extra_body= does: top-level fields of the body
        return params

    def unsupported(self, sampling: Sampling, model: str) -> tuple[str, ...]:
        """Reasoning models take ``reasoning_effort`` and no ``logprobs`` or penalties; others the reverse."""
        reasoning = model.startswith(_COMPLETION_TOKENS_PREFIXES)
        wrong = {"logprobs", "frequency_penalty", "presence_penalty", "top_p"} if reasoning else {"reasoning_effort"}
        return tuple(n for n in sampling.given() if n not in self.accepts or n in wrong)

    @staticmethod
    def _json_usage(u: Any) -> Usage:
        """Usage from the body's ``usage``; missing or malformed parts are left for the kit to count."""
        if not isinstance(u, dict):
            return Usage(estimated=True)
        p, c = u.get("prompt_tokens"), u.get("completion_tokens")
        details = u.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        out_details = u.get("completion_tokens_details")
        reasoning = out_details.get("reasoning_tokens") if isinstance(out_details, dict) else None
        ok = isinstance(p, int) and isinstance(c, int) and p >= 0 and c >= 0
        return Usage(
            prompt_tokens=p if isinstance(p, int) and p >= 0 else 0,
            completion_tokens=c if isinstance(c, int) and c >= 0 else 0,
            cached_tokens=cached if isinstance(cached, int) and cached >= 0 else 0,
            reasoning_tokens=reasoning if isinstance(reasoning, int) and reasoning >= 0 else 0,
            estimated=not ok,
        )

    def _body(self, raw: Any, req: ProviderRequest) -> dict[str, Any]:
        """The JSON object of a non-streaming answer, or a bad_response error saying what is wrong."""
        ctype = raw.headers.get("content-type", "")
        if "json" not in ctype.lower():
            raise bad_response(self.name, req.model,
                               f"the server answered with content type {ctype or 'none'!r}, not a chat completion "
                               f"({raw.text[:80]!r}); {self.url_hint}")
        try:
            data = json.loads(raw.content)
        except ValueError as exc:
            raise bad_response(self.name, req.model, f"the server's answer is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise bad_response(self.name, req.model, f"the server's answer is not a JSON object ({str(data)[:80]!r})")
        return data

    def _response(self, data: dict[str, Any], req: ProviderRequest) -> ProviderResponse:
        """Map a chat-completions JSON body to the kit's response."""
        choices = data.get("choices")
        if not isinstance(choices, list):
            raise bad_response(
                self.name, req.model,
                f"the server answered with something that is not a chat completion ({str(data)[:120]!r}); "
                f"{self.url_hint}",
            )
        if not choices or not isinstance(choices[0], dict):
            raise bad_response(self.name, req.model, "the answer has no choices")
        choice = choices[0]
        message = choice.get("message")
        if not isinstance(message, dict):
            raise bad_response(self.name, req.model, "the answer's first choice has no message")
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise bad_response(self.name, req.model, f"the answer's content is not text ({type(content).__name__})")
        finish = choice.get("finish_reason")
        if not content and finish not in ("content_filter", "length", "stop", "tool_calls"):
            raise bad_response(self.name, req.model, "the answer has neither text nor a finish reason")
        calls = message.get("tool_calls")
        if calls is not None and not isinstance(calls, list):
            raise bad_response(self.name, req.model, f"the answer's tool_calls is not a list ({str(calls)[:80]!r})")
        return ProviderResponse(
            content=content or "",
            model=str(data.get("model") or ""),
            usage=self._json_usage(data.get("usage")),
            finish_reason=finish if isinstance(finish, str) else None,
            response_id=data.get("id") if isinstance(data.get("id"), str) else None,
            logprobs=_logprobs(choice) if req.sampling is not None and req.sampling.logprobs is not None else None,
            tool_calls=_tool_calls(calls or (), self.name, req.model),
        )

    # --- batch API (experiments' executor="batch") -------------------------------------
    def batch_params(self, req: ProviderRequest) -> dict[str, Any]:
        """The body of ``req`` as one line of a batch input file (the chat-completions body)."""
        return self._params(req)

    def batch_response(self, body: dict[str, Any], req: ProviderRequest) -> ProviderResponse:
        """A batch output line's response body, read like a live answer."""
        return self._response(body, req)

    # --- calls ------------------------------------------------------------------------
    def complete(self, req: ProviderRequest) -> ProviderResponse:
        params, cast = self._params(req), self._response_class()
        with translate_errors(self.name, req.model):
            raw = self.client.post(_CHAT_PATH, body=params, cast_to=cast, options=_CHAT_OPTIONS)
        return self._response(self._body(raw, req), req)

    async def acomplete(self, req: ProviderRequest) -> ProviderResponse:
        params, cast = self._params(req), self._response_class()
        with translate_errors(self.name, req.model):
            raw = await self.aclient.post(_CHAT_PATH, body=params, cast_to=cast, options=_CHAT_OPTIONS)
        return self._response(self._body(raw, req), req)

    def stream(self, req: ProviderRequest) -> Iterator[StreamItem]:
        yield from self.sse(_accumulator(self.name, req), _CHAT_PATH, self._params(req), options=_CHAT_OPTIONS)

    async def astream(self, req: ProviderRequest) -> AsyncIterator[StreamItem]:
        acc = _accumulator(self.name, req)
        async for item in self.asse(acc, _CHAT_PATH, self._params(req), options=_CHAT_OPTIONS):
            yield item

    # --- embeddings -------------------------------------------------------------------
    def embed(self, texts: list[str], model: str) -> tuple[list[list[float]], Usage, str]:
        with translate_errors(self.name, model):
            resp = self.client.embeddings.create(model=model, input=texts)
        data = getattr(resp, "data", None)
        if not isinstance(data, list) or len(data) != len(texts):
            raise bad_response(self.name, model, f"the embeddings answer holds {len(data) if isinstance(data, list) else 'no'} "
                                                 f"vector(s) for {len(texts)} input(s)")
        try:
            vectors = [list(d.embedding) for d in sorted(data, key=lambda d: d.index)]
        except (AttributeError, TypeError) as exc:
            raise bad_response(self.name, model, f"the embeddings answer is malformed ({exc})") from None
        dims = {len(v) for v in vectors}
        if len(dims) != 1 or 0 in dims or not all(isinstance(x, (int, float)) for x in vectors[0][:4]):
            raise bad_response(self.name, model, "the embeddings answer holds vectors of different or zero length")
        tokens = getattr(getattr(resp, "usage", None), "prompt_tokens", None)
        usage = Usage(prompt_tokens=tokens) if isinstance(tokens, int) else Usage(estimated=True)
        return vectors, usage, getattr(resp, "model", None) or model


class _StreamAccumulator(SSEAccumulator):
    """Collects a chat-completions stream (raw JSON chunks): text, usage chunk, finish reason.

    A stream is complete only when a choice carried a ``finish_reason``; one that ends without
    it (a dropped proxy, a server killed mid-answer) is ``incomplete_stream``, never "ok"."""

    def __init__(self, provider: str, model: str, *, logprobs: bool = False) -> None:
        super().__init__(provider, model)
        self.usage: Any = None
        self.finish_reason: str | None = None
        self.logprobs: list[dict[str, Any]] | None = [] if logprobs else None
        self.calls: dict[int, list[str]] = {}  # index -> [id, name, argument pieces...]

    def feed(self, chunk: Any) -> str:
        chunk = self.event(chunk)
        if self.response_id is None and isinstance(chunk.get("id"), str):
            self.response_id = chunk["id"]
        if isinstance(chunk.get("model"), str) and chunk["model"]:
            self.model = chunk["model"]
        if chunk.get("usage") is not None:
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        if choices is None and "usage" not in chunk:
            raise bad_response(self.provider, self.requested, f"a stream event has no choices ({str(chunk)[:80]!r})")
        text = ""
        for choice in choices or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                text += delta["content"]
            if isinstance(delta, dict) and isinstance(delta.get("tool_calls"), list):
                self._tool_deltas(delta["tool_calls"])
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
            if self.logprobs is not None:
                self.logprobs.extend(_logprobs(choice) or ())
        if text:
            self.parts.append(text)
        return text

    def _tool_deltas(self, deltas: list[Any]) -> None:
        """Streamed tool calls: the first delta of each index names it, the rest add argument text."""
        for d in deltas:
            if not isinstance(d, dict) or not isinstance(d.get("index"), int):
                raise bad_response(self.provider, self.requested, f"a streamed tool call has no index ({str(d)[:80]!r})")
            entry = self.calls.setdefault(d["index"], ["", ""])
            fn: dict[str, Any] = d["function"] if isinstance(d.get("function"), dict) else {}
            if isinstance(d.get("id"), str) and d["id"]:
                entry[0] = d["id"]
            if isinstance(fn.get("name"), str) and fn["name"]:
                entry[1] = fn["name"]
            if isinstance(fn.get("arguments"), str):
                entry.append(fn["arguments"])

    def result(self) -> ProviderResponse:
        if self.finish_reason is None:
            what = "no events" if not self.events else f"{self.events} event(s) and no finish_reason"
            raise incomplete_stream(self.provider, self.requested, what)
        return ProviderResponse(
            content="".join(self.parts),
            model=self.model,
            usage=OpenAIProvider._json_usage(self.usage),  # estimated when the server sent no usage chunk
            finish_reason=self.finish_reason,
            response_id=self.response_id,
            logprobs=self.logprobs,
            tool_calls=tuple(ToolCall.of(e[0], e[1], "".join(e[2:])) for _, e in sorted(self.calls.items())),
        )



def _accumulator(name: str, req: ProviderRequest) -> _StreamAccumulator:
    return _StreamAccumulator(name, req.model, logprobs=req.sampling is not None and req.sampling.logprobs is not None)


def _logprobs(choice: dict[str, Any]) -> list[dict[str, Any]]:
    """A choice's (or stream chunk's) token log-probabilities: [{token, logprob, top_logprobs}]."""
    lp = choice.get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    return [{"token": t.get("token"), "logprob": t.get("logprob"),
             "top_logprobs": [{"token": a.get("token"), "logprob": a.get("logprob")}
                              for a in t.get("top_logprobs") or () if isinstance(a, dict)]}
            for t in content or () if isinstance(t, dict)]


def _message(m: Message) -> dict[str, Any]:
    """A turn with tool calls, a tool result or images, in the chat-completions format."""
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}
    out: dict[str, Any] = {"role": m.role}
    if m.images:
        parts: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
        parts += [{"type": "image_url", "image_url": {"url": i.data_url} if i.detail == "auto" else
                   {"url": i.data_url, "detail": i.detail}} for i in m.images]
        out["content"] = parts
    elif m.content or not m.tool_calls:
        out["content"] = m.content
    if m.tool_calls:
        out["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}
                             for c in m.tool_calls]
    return out


def _tool_calls(calls: Any, provider: str, model: str) -> tuple[ToolCall, ...]:
    out = []
    for c in calls:
        fn = c.get("function") if isinstance(c, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not isinstance(c.get("id"), str):
            raise bad_response(provider, model, f"a tool call has no id or function name ({str(c)[:80]!r})")
        out.append(ToolCall.of(c["id"], fn["name"], fn.get("arguments") if isinstance(fn.get("arguments"), str) else "{}"))
    return tuple(out)
