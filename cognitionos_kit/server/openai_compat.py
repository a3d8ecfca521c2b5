"""The OpenAI-compatible routes under ``/v1``: ``POST /v1/chat/completions`` (JSON, or server-sent
``chat.completion.chunk`` events ending ``data: [DONE]``), ``POST /v1/embeddings``, ``GET /v1/models``.

An OpenAI client points its base URL at ``<server>/v1`` with a server token as its API key; each
call goes through the server's Kit for the token's user (fallback, costing, budgets, the ledger).
The ``model`` of an answer is the model that answered; the ``cognitionos`` field says whether it
stands in for the one asked (``substituted``, ``requested_model``), its provider, cost and
``request_id`` (also the ``x-request-id`` header, the SDK's ``_request_id``). A streamed answer
names the requested model until its last chunk, which names the answering one and carries
``cognitionos``: a fallback is only known once the answer is done.

Errors are OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``: 400 for a bad or
unsupported field (named in ``param``), 401 ``invalid_api_key``, 402 a budget, 429 a rate limit,
502 the providers failed (the kit already fell back: ``x-should-retry: false`` stops the SDK retrying).
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from ..core.errors import (
    BudgetExceededError,
    KitError,
    RateLimitExceededError,
    StructuredOutputError,
    redact,
)
from .auth import Caller
from .errors import error_headers, error_status
from .openai_schemas import (
    ChatRequest,
    EmbeddingsRequest,
    OpenAIError,
    chat_json,
    chunk_json,
    unsupported,
)
from .streams import kit_of, sse_response, start_stream

if TYPE_CHECKING:
    from ..kit import Kit

__all__ = ["router", "openai_error"]

_NO_RETRY = {"x-should-retry": "false"}
_PART_TAGS = ("text", "image_url")


def openai_error(exc: Exception) -> OpenAIError:
    """Any error of a ``/v1`` request as an ``OpenAIError`` (status, type, param, code)."""
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, RequestValidationError):
        return _validation(exc)
    if isinstance(exc, HTTPException):
        if exc.status_code == 401:
            return OpenAIError(401, str(exc.detail), code="invalid_api_key", headers=dict(exc.headers or {}))
        return OpenAIError(exc.status_code, str(exc.detail), type="invalid_request_error" if exc.status_code < 500
                           else "server_error", headers=dict(exc.headers or {}))
    assert isinstance(exc, KitError)
    message, headers = redact(exc), error_headers(exc)
    if isinstance(exc, BudgetExceededError):
        return OpenAIError(402, message, type="insufficient_quota", code="budget_exceeded", headers=headers | _NO_RETRY)
    if isinstance(exc, RateLimitExceededError):
        return OpenAIError(429, message, type="rate_limit_error", code="rate_limit_exceeded", headers=headers)
    if isinstance(exc, StructuredOutputError):
        return OpenAIError(502, message, type="api_error", code="invalid_model_output", headers=_NO_RETRY)
    status = error_status(exc)
    if status == 422:  # the request cannot be served as asked: OpenAI says 400
        return OpenAIError(400, message, code="invalid_value")
    if status == 502:
        return OpenAIError(502, message, type="api_error", code="upstream_error", headers=_NO_RETRY)
    return OpenAIError(status, message, type="server_error", code=type(exc).__name__)


def _validation(exc: RequestValidationError) -> OpenAIError:
    err = max(exc.errors(), key=lambda e: len(e.get("loc", ())))  # the deepest: a union's closest branch
    loc = [p for p in err.get("loc", ()) if p != "body"]
    # a union's failing branch adds its type name to the location ("str", "list[...]", "function-after[...]")
    loc = [p for p in loc if isinstance(p, int) or not (p[:1].islower() and ("[" in p or p in ("str", "int", "float")))]
    # and a content part's tag after its index ("content", 0, "image_url", "image_url", "url")
    loc = [p for i, p in enumerate(loc) if not (p in _PART_TAGS and i and isinstance(loc[i - 1], int))]
    param = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or None
    if err.get("type") == "missing":
        return OpenAIError(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    if err.get("type") == "json_invalid":
        return OpenAIError(400, "The request body is not valid JSON.", code="invalid_json")
    return OpenAIError(400, f"Invalid value for '{param}': {err.get('msg')}.", param=param, code="invalid_value")


class _OpenAIRoute(APIRoute):
    """Every error of the route, its dependencies (the token) and its body in OpenAI's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except (OpenAIError, RequestValidationError, HTTPException, KitError) as exc:
                e = openai_error(exc)
                return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

        return route


router = APIRouter(prefix="/v1", tags=["openai"], route_class=_OpenAIRoute)


def _refuse_unsupported(body: ChatRequest | EmbeddingsRequest) -> None:
    name = unsupported(body)
    if name is not None:
        raise OpenAIError(400, f"Unsupported parameter: '{name}' is not served by cognitionos-kit's /v1 endpoint.",
                          param=name, code="unsupported_parameter")


def _sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


@router.post("/chat/completions", response_model=None)
async def chat_completions(request: Request, body: ChatRequest, user: Caller) -> Response:
    """OpenAI's chat completions for the token's user (a ``user`` field in the body is ignored)."""
    _refuse_unsupported(body)
    if body.stream_options is not None and not body.stream:
        raise OpenAIError(400, "stream_options is only allowed with stream: true", param="stream_options",
                          code="invalid_value")
    prompt, options = body.call(user.name)
    kit = kit_of(request)
    if not body.stream:
        c = await kit.acomplete(prompt, **options)
        return JSONResponse(chat_json(c), headers={"x-request-id": c.request_id})
    stream, chunks, first = await start_stream(kit, prompt, options)
    chunk_id, created = "chatcmpl-" + secrets.token_hex(12), int(time.time())
    with_usage = body.stream_options is not None and body.stream_options.include_usage

    async def events() -> AsyncIterator[str]:
        try:
            yield _sse(chunk_json(chunk_id, body.model, created, delta={"role": "assistant", "content": ""}))
            if first is not None:
                yield _sse(chunk_json(chunk_id, body.model, created, delta={"content": first}))
                async for text in chunks:
                    yield _sse(chunk_json(chunk_id, body.model, created, delta={"content": text}))
            done = stream.completion
            if done is not None:
                yield _sse(chunk_json(chunk_id, body.model, created, finish=done))
                if with_usage:
                    yield _sse(chunk_json(chunk_id, body.model, created, usage=done))
            yield _sse("[DONE]")
        except KitError as exc:  # after text was sent: an error event (the SDK raises it as an APIError)
            yield _sse(openai_error(exc).body())
        finally:
            await stream.aclose()

    return sse_response(events())


def _embedding_models(kit: Kit) -> list[tuple[str, str]]:
    from ..calls.catalogue import EMBEDDING_MODELS
    from ..calls.embeddings import get_local_embedder

    openai = kit.providers.get("openai")
    remote = [(m, "openai") for m in EMBEDDING_MODELS] if openai is not None and openai.configured else []
    return [(get_local_embedder().name, "local"), *remote]


@router.post("/embeddings")
def embeddings(request: Request, body: EmbeddingsRequest, user: Caller) -> JSONResponse:
    """OpenAI's embeddings: ``all-MiniLM-L6-v2`` (local, 384 dims, free) or ``text-embedding-*`` at OpenAI."""
    from ..calls.embeddings import get_local_embedder
    from ..calls.tokens import count_text

    _refuse_unsupported(body)
    texts = [body.input] if isinstance(body.input, str) else body.input
    local = body.model == get_local_embedder().name
    vectors = kit_of(request).embed(texts, None if local else body.model, user_id=user.name)
    if body.dimensions is not None and body.dimensions != vectors.shape[1]:
        raise OpenAIError(400, f"{body.model} gives {vectors.shape[1]} dimensions; it cannot give {body.dimensions}",
                          param="dimensions", code="invalid_value")
    data = [{"object": "embedding", "index": i,
             "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode() if body.encoding_format == "base64"
             else v.tolist()} for i, v in enumerate(vectors)]
    tokens = sum(count_text(t, body.model) for t in texts)
    return JSONResponse({"object": "list", "data": data, "model": body.model,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


@router.get("/models")
def models(request: Request, user: Caller) -> dict[str, Any]:
    """The chat models the server can use right now, then the embedding models."""
    kit = kit_of(request)
    frame = kit.models()
    pairs = list(dict.fromkeys(zip(frame["model"], frame["provider"], strict=True))) + _embedding_models(kit)
    return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": p} for m, p in pairs]}
