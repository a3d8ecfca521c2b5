"""A dollar budget shared by concurrent calls: reserve the worst case before sending, settle after.

``spent + reserved <= budget`` holds at every moment, so however many calls are in flight the
real spend cannot pass the budget (as long as each real cost is at most its worst case, which the
runner over-estimates on purpose). When a call does not fit, it waits for in-flight calls to
settle (their real cost is usually far below the worst case); if it still does not fit with
nothing in flight, the budget is exhausted and the run stops.
"""

from __future__ import annotations

import asyncio

__all__ = ["Budget"]


class Budget:
    """``await acquire(worst)`` -> True (reserved) or False (exhausted); ``settle(worst, real)``."""

    def __init__(self, limit_usd: float | None) -> None:
        self.limit = limit_usd
        self.spent = 0.0
        self.reserved = 0.0
        self.in_flight = 0
        self.exhausted = False
        self.refused: float | None = None  # the worst case of the first call that did not fit
        self._cond: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    async def acquire(self, worst_usd: float) -> bool:
        if self.limit is None:
            self.in_flight += 1
            return True
        cond = self._condition()
        async with cond:
            while not self.exhausted:
                if self.spent + self.reserved + worst_usd <= self.limit:
                    self.reserved += worst_usd
                    self.in_flight += 1
                    return True
                if self.in_flight == 0:
                    self.exhausted = True
                    self.refused = worst_usd
                    break
                await cond.wait()
            cond.notify_all()
            return False

    async def settle(self, worst_usd: float, real_usd: float) -> None:
        self.spent += real_usd
        self.in_flight -= 1
        if self.limit is None:
            return
        cond = self._condition()
        async with cond:
            self.reserved -= worst_usd
            cond.notify_all()
