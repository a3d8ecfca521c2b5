"""How the kit's errors reach an HTTP client: a status and a JSON body, keys never included.

    BudgetExceededError         402  the caller's (or their team's, or the folder's) budget
    RateLimitExceededError      429  with Retry-After
    InvalidRequestError,
    ConfigurationError          422  the request cannot be served as asked
    ProviderError,
    AllProvidersFailedError     502  the providers failed (their messages redacted)
    StorageError                503  the data folder could not be written
    any other KitError          500
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from ..core.errors import (
    AllProvidersFailedError,
    BudgetExceededError,
    ConfigurationError,
    InvalidRequestError,
    KitError,
    ProviderError,
    RateLimitExceededError,
    StorageError,
    redact,
)

__all__ = ["error_status", "error_body", "error_headers"]

_STATUS: tuple[tuple[type[KitError], int], ...] = (
    (BudgetExceededError, 402),
    (RateLimitExceededError, 429),
    (InvalidRequestError, 422),
    (ConfigurationError, 422),
    (ProviderError, 502),
    (AllProvidersFailedError, 502),
    (StorageError, 503),
)


def error_status(exc: KitError) -> int:
    return next((status for kind, status in _STATUS if isinstance(exc, kind)), 500)


def error_body(exc: KitError) -> dict[str, Any]:
    """``{"detail": <message>, "error": <class name>, "request_id"?, "budget"?, "attempts"?,
    "provider"?...}``, redacted
    (``detail`` as in FastAPI's own errors)."""
    body: dict[str, Any] = {"detail": redact(exc), "error": type(exc).__name__}
    if getattr(exc, "request_id", None):
        body["request_id"] = exc.request_id  # type: ignore[attr-defined]
    if isinstance(exc, ProviderError):
        body.update(provider=exc.provider, model=exc.model, error_type=exc.error_type, status_code=exc.status_code)
    if isinstance(exc, AllProvidersFailedError):  # each attempt, so a client Kit raises the same error
        body["attempts"] = [{**asdict(a), "error_message": a.error_message and redact(a.error_message)}
                            for a in exc.attempts]
    if isinstance(exc, BudgetExceededError):
        resets = exc.resets_at.isoformat() if hasattr(exc.resets_at, "isoformat") else None
        body["budget"] = {"scope": exc.scope, "name": exc.name, "period": exc.period, "limit_usd": exc.limit_usd,
                          "spent_usd": exc.spent_usd, "left_usd": exc.left_usd, "resets_at": resets}
    return body


def error_headers(exc: KitError) -> dict[str, str]:
    if isinstance(exc, RateLimitExceededError):
        return {"Retry-After": str(max(1, math.ceil(exc.wait_s)))}
    return {}
