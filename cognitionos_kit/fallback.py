"""The thin drivers that walk a call's chain: call each provider in turn, let ``policy.ChainRun``
decide what a failure means, report every attempt as soon as it ends.

Each attempt is reported to ``on_attempt`` as soon as it ends, so the ledger holds failed
attempts even when the chain as a whole fails. The provider's client is built (and its SDK
imported) before the attempt's clock starts: that is set-up, not the provider's latency.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, Callable

from .policy import ChainRun, Step
from .providers.http import AttemptIO, attempt_scope
from .types import Attempt, ProviderResponse

__all__ = ["Step", "OnAttempt", "run", "arun", "hard_timeout"]

OnAttempt = Callable[[Step, Attempt, "ProviderResponse | None"], None]
_GRACE = 0.25  # the HTTP client enforces the deadline; this backstop only catches what it cannot see


def run(chain: ChainRun, on_attempt: OnAttempt) -> tuple[Step, ProviderResponse, list[Attempt]]:
    for number, step in chain:
        setup_ms = step.provider.prepare(False)
        io = chain.attempt_io()
        t0 = time.perf_counter()
        try:
            with attempt_scope(io):
                resp = step.provider.complete(step.request)
        except BaseException as exc:
            attempt, stop = chain.failed(number, step, exc, (time.perf_counter() - t0) * 1000, io, setup_ms)
            on_attempt(step, attempt, None)
            if stop is not None:
                raise stop from None
            continue
        attempt = chain.succeeded(number, step, (time.perf_counter() - t0) * 1000, io, setup_ms)
        on_attempt(step, attempt, resp)
        return step, resp, chain.attempts
    raise chain.exhausted()


async def arun(chain: ChainRun, on_attempt: OnAttempt) -> tuple[Step, ProviderResponse, list[Attempt]]:
    for number, step in chain:
        setup_ms = await step.provider.aprepare()
        io = chain.attempt_io()
        t0 = time.perf_counter()
        try:
            with attempt_scope(io):
                async with hard_timeout(io):
                    resp = await step.provider.acomplete(step.request)
        except BaseException as exc:
            attempt, stop = chain.failed(number, step, exc, (time.perf_counter() - t0) * 1000, io, setup_ms)
            on_attempt(step, attempt, None)
            if stop is not None:
                raise stop from None
            continue
        attempt = chain.succeeded(number, step, (time.perf_counter() - t0) * 1000, io, setup_ms)
        on_attempt(step, attempt, resp)
        return step, resp, chain.attempts
    raise chain.exhausted()


class hard_timeout:
    """``async with hard_timeout(io):`` cancel the awaited work shortly after the attempt's
    deadline and mark it timed out (a class, not ``@asynccontextmanager``: it runs on every call
    and every stream chunk). Python 3.10 has no ``asyncio.timeout``: there the HTTP client's
    deadline alone applies."""

    __slots__ = ("io", "cm")

    def __init__(self, io: AttemptIO) -> None:
        self.io = io
        self.cm: Any = None

    async def __aenter__(self) -> None:
        if _TIMEOUT is not None:
            self.cm = _TIMEOUT(max(0.0, self.io.remaining()) + _GRACE)
            await self.cm.__aenter__()

    async def __aexit__(self, typ: Any, exc: Any, tb: Any) -> bool | None:
        if self.cm is None:
            return None
        try:
            return await self.cm.__aexit__(typ, exc, tb)
        except TimeoutError:
            self.io.timed_out = True
            raise


_TIMEOUT = getattr(asyncio, "timeout", None) if sys.version_info >= (3, 11) else None
