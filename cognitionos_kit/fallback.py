"""Where fallback decides: try each (provider, request) in order, move on when an error says
another provider could help, stop when the request itself is wrong.

Each attempt is reported to ``on_attempt`` as soon as it ends, so the ledger holds failed
attempts even when the chain as a whole fails.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from .errors import AllProvidersFailedError, ProviderError, redact
from .providers.base import Provider
from .types import Attempt, ProviderRequest, ProviderResponse


@dataclass(frozen=True)
class Step:
    provider: Provider
    request: ProviderRequest


OnAttempt = Callable[[Step, Attempt, "ProviderResponse | None"], None]


def failed_attempt(number: int, step: Step, exc: BaseException, latency_ms: float) -> Attempt:
    if isinstance(exc, ProviderError):
        kind, code = exc.error_type, exc.status_code
    else:
        kind, code = type(exc).__name__, None
    return Attempt(
        number=number,
        provider=step.provider.name,
        model=step.request.model,
        status="error",
        latency_ms=latency_ms,
        error_type=kind,
        error_message=redact(exc)[:500],
        status_code=code,
    )


def _should_stop(exc: BaseException) -> bool:
    """Errors that are not a provider's (bugs, KeyboardInterrupt) and invalid requests stop the chain."""
    return not isinstance(exc, ProviderError) or not exc.retryable


def run(steps: list[Step], on_attempt: OnAttempt, request_id: str) -> tuple[Step, ProviderResponse, list[Attempt]]:
    attempts: list[Attempt] = []
    for number, step in enumerate(steps, 1):
        t0 = time.perf_counter()
        try:
            resp = step.provider.complete(step.request)
        except BaseException as exc:
            attempt = failed_attempt(number, step, exc, (time.perf_counter() - t0) * 1000)
            attempts.append(attempt)
            on_attempt(step, attempt, None)
            if _should_stop(exc):
                exc.attempts = attempts  # type: ignore[attr-defined]
                raise
            continue
        attempt = Attempt(number, step.provider.name, step.request.model, "ok", (time.perf_counter() - t0) * 1000)
        attempts.append(attempt)
        on_attempt(step, attempt, resp)
        return step, resp, attempts
    raise AllProvidersFailedError(attempts, request_id)


async def arun(
    steps: list[Step], on_attempt: OnAttempt, request_id: str
) -> tuple[Step, ProviderResponse, list[Attempt]]:
    attempts: list[Attempt] = []
    for number, step in enumerate(steps, 1):
        t0 = time.perf_counter()
        try:
            resp = await step.provider.acomplete(step.request)
        except BaseException as exc:
            attempt = failed_attempt(number, step, exc, (time.perf_counter() - t0) * 1000)
            attempts.append(attempt)
            on_attempt(step, attempt, None)
            if _should_stop(exc):
                exc.attempts = attempts  # type: ignore[attr-defined]
                raise
            continue
        attempt = Attempt(number, step.provider.name, step.request.model, "ok", (time.perf_counter() - t0) * 1000)
        attempts.append(attempt)
        on_attempt(step, attempt, resp)
        return step, resp, attempts
    raise AllProvidersFailedError(attempts, request_id)
