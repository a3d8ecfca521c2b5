"""The thin drivers that walk a call's chain: call each provider in turn, let ``policy.ChainRun``
decide what a failure means, report every attempt as soon as it ends.

Each attempt is reported to ``on_attempt`` as soon as it ends, so the ledger holds failed
attempts even when the chain as a whole fails. The provider's client is built (and its SDK
imported) before the attempt's clock starts: that is set-up, not the provider's latency.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..core.types import Attempt, ProviderResponse
from .policy import ChainRun, OnAttempt, Step
from .providers.http import AttemptIO

__all__ = ["Step", "OnAttempt", "run", "arun", "hard_timeout"]

_GRACE = 0.25  # the HTTP client enforces the deadline; this backstop only catches what it cannot see


def run(chain: ChainRun, on_attempt: OnAttempt) -> tuple[Step, ProviderResponse, list[Attempt]]:
    """Try each step in turn until one answers (the policy decides what a failure means)."""
    for number, step in chain:
        setup_ms = step.provider.prepare(False)
        chain.pause()
        with chain.attempt(number, step, setup_ms, on_attempt) as a:
            a.response = step.provider.complete(step.request)
        if a.response is not None:
            return a.finish()
    raise chain.exhausted()


async def arun(chain: ChainRun, on_attempt: OnAttempt) -> tuple[Step, ProviderResponse, list[Attempt]]:
    """``run`` for async providers; a provider that cannot bound its own deadline gets a backstop."""
    for number, step in chain:
        setup_ms = await step.provider.aprepare()
        await chain.apause()
        with chain.attempt(number, step, setup_ms, on_attempt) as a:
            if step.provider.bounds_deadline:
                a.response = await step.provider.acomplete(step.request)
            else:
                async with hard_timeout(a.io):
                    a.response = await step.provider.acomplete(step.request)
        if a.response is not None:
            return a.finish()
    raise chain.exhausted()


class hard_timeout:
    """``async with hard_timeout(io):`` a backstop that cancels the awaited work shortly after
    the attempt's deadline (and marks it timed out), for whatever the HTTP client cannot see.

    Written by hand (``loop.call_at`` + ``task.cancel``, as ``asyncio.timeout`` does) because it
    runs on every async call and does less than ``asyncio.timeout`` (no state machine, no
    rescheduling), so it costs less a call (measured by benchmarks/bench_choices.py; figures
    in the README)."""

    __slots__ = ("io", "handle", "task", "fired")

    def __init__(self, io: AttemptIO) -> None:
        self.io = io
        self.handle: Any = None
        self.task: Any = None
        self.fired = False

    async def __aenter__(self) -> None:
        remaining = self.io.remaining()
        if remaining != float("inf"):
            loop = asyncio.get_running_loop()
            self.task = asyncio.current_task()
            self.handle = loop.call_at(loop.time() + max(0.0, remaining) + _GRACE, self._fire)

    def _fire(self) -> None:
        self.fired = True
        self.io.timed_out = True
        self.task.cancel()

    async def __aexit__(self, typ: Any, exc: Any, tb: Any) -> None:
        if self.handle is not None:
            self.handle.cancel()
        if self.fired and typ is not None and issubclass(typ, asyncio.CancelledError):
            if hasattr(self.task, "uncancel"):
                self.task.uncancel()
            raise TimeoutError(f"no answer within the attempt's timeout of {self.io.timeout:g} s") from None
