"""A call's side of the budgets (``guards``): before each attempt its worst case is held in
every budget that applies; the recorder settles the real cost; an attempt that ends without a
recorded cost (cancelled) releases its hold."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..guards import Guard, Reservation
    from .policy import Step
    from .pricing import PriceBook

__all__ = ["BudgetHook"]

_SAFETY = (1.15, 32)  # as CallPlan.worst_case_usd: other vendors' tokenizers differ


class BudgetHook:
    """One call's holds, one attempt at a time."""

    __slots__ = ("guard", "prices", "user_id", "held", "_tokens")

    def __init__(self, guard: Guard, prices: PriceBook, user_id: str | None) -> None:
        self.guard, self.prices, self.user_id = guard, prices, user_id
        self.held: Reservation | None = None
        self._tokens: dict[str, int] = {}

    def before(self, step: Step) -> None:
        """Hold this attempt's worst case (raises BudgetExceededError, holding nothing, if it does not fit)."""
        self.release()
        if not self.guard.active():
            return
        from .plan import request_tokens

        req = step.request
        if req.model not in self._tokens:
            self._tokens[req.model] = request_tokens(req, req.model)
        prompt = math.ceil(self._tokens[req.model] * _SAFETY[0]) + _SAFETY[1]
        worst = self.prices.worst_case(step.provider.price_id or step.provider.name, req.model, prompt, req.max_tokens)
        self.held = self.guard.reserve(self.user_id, worst, f"{step.provider.name}/{req.model}")

    def settle(self, real_usd: float | None) -> None:
        """The attempt's real cost: added to every budget held, the rest released."""
        held, self.held = self.held, None
        if held is not None:
            self.guard.settle(held, real_usd)

    def release(self) -> None:
        self.settle(None)
