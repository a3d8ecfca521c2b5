"""A run's ``budget_usd``, kept like every other budget: each call's worst case is held in the
guards store (the data folder's file or the team's Redis, ``guards.Guard.hold_total``) before it
is sent and settled after, so ``spent + held <= budget`` holds at every moment, however many
calls are in flight (each real cost is at most its worst case, which the runner over-estimates
on purpose). When a call does not fit, it waits for the run's calls in flight to settle (their
real cost is usually far below the worst case); if it still does not fit with nothing in flight,
the budget is exhausted and the run stops.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..guards import Guard

__all__ = ["Budget"]

_FREE = object()  # what acquire returns with no budget: nothing was held


class Budget:
    """``hold = await acquire(worst)`` -> a hold, or None (exhausted); ``await settle(hold, real)``."""

    def __init__(self, limit_usd: float | None, guard: Guard | None = None, run_id: str = "") -> None:
        self.limit = limit_usd
        self.guard, self.run_id = guard, run_id
        self.spent = 0.0
        self.in_flight = 0
        self.exhausted = False
        self.refused: float | None = None  # the worst case of the first call that did not fit
        self._cond: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    async def acquire(self, worst_usd: float) -> Any:
        if self.limit is None or self.guard is None:
            self.in_flight += 1
            return _FREE
        cond = self._condition()
        async with cond:
            while not self.exhausted:
                hold = self.guard.hold_total("run", self.run_id, self.limit, worst_usd)
                if hold is not None:
                    self.in_flight += 1
                    return hold
                if self.in_flight == 0:
                    self.exhausted = True
                    self.refused = worst_usd
                    break
                await cond.wait()
            cond.notify_all()
            return None

    async def settle(self, hold: Any, real_usd: float) -> None:
        self.spent += real_usd
        self.in_flight -= 1
        if hold is _FREE or self.guard is None:
            return
        self.guard.settle(hold, real_usd)
        cond = self._condition()
        async with cond:
            cond.notify_all()
