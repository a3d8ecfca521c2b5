"""What both completion routes (``/complete`` and ``/v1/chat/completions``) share: the server's
Kit, and a stream started before the response is (its first chunk awaited)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import StreamingResponse

if TYPE_CHECKING:
    from ..kit import Kit

__all__ = ["kit_of", "start_stream", "sse_response"]


def kit_of(request: Request) -> Kit:
    """The one Kit the server calls with (built by ``app.create_app``)."""
    return request.app.state.kit


async def start_stream(kit: Kit, prompt: Any, options: Mapping[str, Any]) -> tuple[Any, AsyncIterator[str], str | None]:
    """``kit.astream`` with its first chunk awaited: a budget, a bad model or failing providers
    are then a plain HTTP error, not an event inside a 200 stream. -> (stream, its chunks, the
    first chunk or None)."""
    stream = kit.astream(prompt, **options)
    chunks = stream.__aiter__()
    try:
        first: str | None = await chunks.__anext__()
    except StopAsyncIteration:
        first = None
    except BaseException:
        await stream.aclose()
        raise
    return stream, chunks, first


def sse_response(events: AsyncIterator[str]) -> StreamingResponse:
    """Server-sent events, unbuffered (``X-Accel-Buffering: no`` for nginx)."""
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
