"""The team server's routes: ``/health``, ``/status``, ``/models``, ``/complete`` (JSON or
server-sent events), ``/embed``, ``/usage``, ``/spend``, ``/log``, ``/budgets`` and ``/alerts``. Tables answer as JSON rows,
or as an Arrow IPC stream (``Accept: application/vnd.apache.arrow.stream``: the client Kit's
DataFrames keep their exact dtypes). Every call is made by the server's one Kit with the
caller's name as ``user_id``, so the Kit's per-user budgets and rate limits apply to it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..calls.plan import row_tags
from ..core.errors import InvalidRequestError, KitError
from .auth import Caller, readable_user
from .errors import error_body, error_headers, error_status
from .filters import LOG_COLUMNS, RowFilters, row_filters
from .schemas import CompleteRequest, EmbedRequest, completion_json
from .streams import kit_of, sse_response, start_stream

if TYPE_CHECKING:
    import pandas as pd


__all__ = ["router", "kit_error", "ARROW"]

router = APIRouter()
ARROW = "application/vnd.apache.arrow.stream"
Filters = Annotated[RowFilters, Depends(row_filters)]


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A DataFrame as JSON-ready rows (NaN as null, times in ISO 8601)."""
    return json.loads(frame.to_json(orient="records", date_format="iso"))


def _table(request: Request, frame: pd.DataFrame, **extra: Any) -> dict[str, Any] | Response:
    """``{**extra, "rows": [...]}``, or the frame as Arrow IPC when the client accepts it."""
    if ARROW not in request.headers.get("accept", ""):
        return {**extra, "rows": _records(frame)}
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return Response(sink.getvalue().to_pybytes(), media_type=ARROW)


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


@router.get("/health", tags=["server"])
def health() -> dict[str, str]:
    """Whether the server answers (no token needed)."""
    return {"status": "ok"}


@router.get("/status", tags=["server"])
def status(request: Request, user: Caller) -> dict[str, Any]:
    """What the server's Kit uses (simulation mode, chain, providers: never a key) and who the
    caller is; the data folder's paths for admins only."""
    st = kit_of(request).status()
    if not user.admin:
        st = {k: v for k, v in st.items() if k not in ("home", "ledger", "text_log", "dotenv")}
    return {**st, "user": user.name, "admin": user.admin}


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
    tags = row_tags.set(body.tags() or None)  # the client's project and session label its rows
    try:
        if not body.stream:
            return completion_json(await kit.acomplete(prompt, **options))
        stream, chunks, first = await start_stream(kit, prompt, options)
    finally:
        row_tags.reset(tags)

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


@router.get("/usage", tags=["ledger"], response_model=None)
def usage(request: Request, user: Caller, filters: Filters,
          user_id: str | None = Query(None, alias="user", description="admins: whose rows (default: everyone's)"),
          limit: int = Query(1000, ge=1, le=10_000_000, description="the newest rows, at most")) -> dict[str, Any] | Response:
    """The caller's ledger rows (one per attempt), oldest first; an admin's: anyone's."""
    who = readable_user(user, user_id)
    frame = kit_of(request).usage(**filters, last=limit, **({"user_id": who} if who is not None else {}))
    return _table(request, frame)


@router.get("/spend", tags=["ledger"], response_model=None)
def spend(request: Request, user: Caller, filters: Filters,
          user_id: str | None = Query(None, alias="user", description="admins: whose spend (default: everyone's)"),
          by: Annotated[list[Literal["user_id", "model", "provider", "day", "project"]] | None, Query()] = None,
          ) -> dict[str, Any] | Response:
    """The caller's spend grouped ``by`` (one or more: ``?by=model&by=day``; default user_id); an admin's: anyone's."""
    by = by or ["user_id"]
    who = readable_user(user, user_id)
    frame = kit_of(request).spend(by=by if len(by) > 1 else by[0], **filters,
                                  **({"user_id": who} if who is not None else {}))
    return _table(request, frame, by=by[0] if len(by) == 1 else by)


@router.get("/log", tags=["ledger"], response_model=None)
def log(request: Request, user: Caller, filters: Filters, search: str | None = Query(None, min_length=1, max_length=1000),
        user_id: str | None = Query(None, alias="user", description="admins: whose requests (default: everyone's)"),
        limit: int = Query(1000, ge=1, le=1_000_000, description="the newest requests, at most")) -> dict[str, Any] | Response:
    """What the caller's requests asked and what came back (the text log), newest first; an admin's: anyone's."""
    if bad := sorted(set(filters) - LOG_COLUMNS - {"since", "until"}):
        raise InvalidRequestError(f"the log cannot filter on {bad}; use search= for text, or one of {sorted(LOG_COLUMNS)}")
    who = readable_user(user, user_id)
    frame = kit_of(request).text_log.entries(search, limit=limit, **filters, **({"user_id": who} if who is not None else {}))
    return _table(request, frame)


@router.get("/budgets", tags=["ledger"], response_model=None)
def budgets(request: Request, user: Caller) -> dict[str, Any] | Response:
    """The caller's own budgets (window, limit, spent, reserved, left); an admin's: every budget."""
    frame = kit_of(request).budgets()
    if not user.admin:
        frame = frame[(frame["scope"] == "user") & (frame["name"] == user.name)].reset_index(drop=True)
    return _table(request, frame)


@router.get("/alerts", tags=["ledger"], response_model=None)
def alerts(request: Request, user: Caller) -> dict[str, Any] | Response:
    """The spend alerts fired for the caller, oldest first (``current``: in the present window); an admin's: all."""
    frame = kit_of(request).alerts()
    if not user.admin:
        frame = frame[frame["user_id"] == user.name].reset_index(drop=True)
    return _table(request, frame)


async def kit_error(request: Request, exc: Exception) -> JSONResponse:
    """The exception handler for ``KitError``: its status, a redacted JSON body."""
    assert isinstance(exc, KitError)
    return JSONResponse(error_body(exc), status_code=error_status(exc), headers=error_headers(exc))

