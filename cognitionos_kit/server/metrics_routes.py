"""``GET /metrics``: the server Kit's Prometheus metrics, for an admin's token only."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from .auth import Caller
from .streams import kit_of

__all__ = ["router"]

router = APIRouter()


@router.get("/metrics", tags=["server"], response_class=PlainTextResponse)
def metrics(request: Request, user: Caller,
            by_user: bool = Query(False, description="a user_id label on every series")) -> PlainTextResponse:
    """The server's calls since it started, in the Prometheus text format (counts, tokens, cost,
    errors, latency by kind, provider, model, status, cache_hit). Admins only: 403 for others."""
    if not user.admin:
        raise HTTPException(403, "only an admin may read the server's metrics")
    return PlainTextResponse(kit_of(request).metrics_text(by_user=by_user), media_type=CONTENT_TYPE_LATEST)
