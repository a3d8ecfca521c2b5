"""The team server's routes: ``/health``, ``/models``, ``/complete`` (JSON or server-sent events),
``/embed``, ``/usage`` and ``/spend``. Every call is made by the server's one Kit with the
caller's name as ``user_id``, so the Kit's per-user budgets and rate limits apply to it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ..core.errors import KitError
from .auth import Caller, readable_user
from .errors import error_body, error_headers, error_status
from .schemas import CompleteRequest, EmbedRequest, completion_json
from .streams import kit_of, sse_response, start_stream

if TYPE_CHECKING:
    import pandas as pd


__all__ = ["router", "kit_error"]

router = APIRouter()


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A DataFrame as JSON-ready rows (NaN as null, times in ISO 8601)."""
    return json.loads(frame.to_json(orient="records", date_format="iso"))


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


@router.get("/health", tags=["server"])
def health() -> dict[str, str]:
    """Whether the server answers (no token needed)."""
    return {"status": "ok"}


@router.get("/models", tags=["calls"])
def models(request: Request, user: Caller) -> dict[str, Any]:
    """The models the server can use right now, with role defaults, context window and prices."""
    return {"models": _records(kit_of(request).models())}


@router.post("/complete", tags=["calls"], response_model=None)
async def complete(request: Request, body: CompleteRequest, user: Caller) -> dict[str, Any] | StreamingResponse:
    """One costed completion for the caller, as JSON; with ``"stream": true``, server-sent events:
    ``chunk`` events (``{"text": ...}``), then one ``completion`` event (the JSON answer), or an
    ``error`` event when the stream breaks after text was sent. Errors before the first chunk
    (a budget, a bad model, every provider failing) are plain HTTP errors."""
    prompt, options = body.call(user.name)
    kit = kit_of(request)
    if not body.stream:
        return completion_json(await kit.acomplete(prompt, **options))
    stream, chunks, first = await start_stream(kit, prompt, options)

    async def events() -> AsyncIterator[str]:
        try:
            if first is not None:
                yield _sse("chunk", {"text": first})
                async for chunk in chunks:
                    yield _sse("chunk", {"text": chunk})
            yield _sse("completion", completion_json(stream.completion))
        except KitError as exc:
            yield _sse("error", {"status": error_status(exc), **error_body(exc)})
        finally:
            await stream.aclose()

    return sse_response(events())


@router.post("/embed", tags=["calls"])
def embed(request: Request, body: EmbedRequest, user: Caller) -> dict[str, Any]:
    """Embeddings (L2-normalised); default the server's local model, ``text-embedding-*`` at OpenAI."""
    from ..calls.embeddings import get_local_embedder

    vectors = kit_of(request).embed(body.input, body.model, user_id=user.name)
    return {"model": body.model or get_local_embedder().name, "dim": int(vectors.shape[1]),
            "embeddings": vectors.tolist()}


@router.get("/usage", tags=["ledger"])
def usage(request: Request, user: Caller,
          user_id: str | None = Query(None, alias="user", description="admins: whose rows (default: everyone's)"),
          model: str | None = None, provider: str | None = None, request_id: str | None = None,
          limit: int = Query(1000, ge=1, le=100_000, description="the newest rows, at most")) -> dict[str, Any]:
    """The caller's ledger rows (one per attempt), oldest first; an admin's: anyone's."""
    filters = {"user_id": readable_user(user, user_id), "model": model, "provider": provider, "request_id": request_id}
    frame = kit_of(request).usage(**{k: v for k, v in filters.items() if v is not None})
    return {"rows": _records(frame.tail(limit))}


@router.get("/spend", tags=["ledger"])
def spend(request: Request, user: Caller,
          user_id: str | None = Query(None, alias="user", description="admins: whose spend (default: everyone's)"),
          by: Literal["user_id", "model", "provider", "day", "project"] = "user_id") -> dict[str, Any]:
    """The caller's spend grouped ``by``; an admin's: anyone's."""
    who = readable_user(user, user_id)
    frame = kit_of(request).spend(by=by, **({"user_id": who} if who is not None else {}))
    return {"by": by, "rows": _records(frame)}


async def kit_error(request: Request, exc: Exception) -> JSONResponse:
    """The exception handler for ``KitError``: its status, a redacted JSON body."""
    assert isinstance(exc, KitError)
    return JSONResponse(error_body(exc), status_code=error_status(exc), headers=error_headers(exc))

