"""A call's side of the guards: before each attempt its worst case is held in every budget that
applies and its slot booked in every rate limit (the driver waits for it just before sending,
after the client is set up: ``ChainRun.pause``); the recorder
settles the real cost; an attempt that ends without a recorded cost (cancelled) releases its hold."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from ..core.errors import KitError, warn_user
from ..guards.limits import pause_name

if TYPE_CHECKING:
    from ..guards import Guard, Reservation
    from .policy import Step
    from .pricing import PriceBook

__all__ = ["BudgetHook", "step_worst_case"]

_MAX_PAUSE_S = 600.0  # a Retry-After longer than this is taken as this (a misconfigured server must not stop a team)
_SAFETY = (1.15, 32)  # worst-case prompt tokens = count x 1.15 + 32: tokenizers of other vendors differ


def step_worst_case(prices: PriceBook, step: Step, prompt_tokens: int) -> float | None:
    """The most one attempt could cost: its prompt (``prompt_tokens`` counted with a margin) and
    the full ``max_tokens`` answer; None when its model has no known price."""
    req = step.request
    n = math.ceil(prompt_tokens * _SAFETY[0]) + _SAFETY[1]
    return prices.worst_case(step.provider.price_id or step.provider.name, req.model, n, req.max_tokens)


class BudgetHook:
    """One call's holds, one attempt at a time."""

    __slots__ = ("guard", "prices", "user_id", "held", "_tokens", "send_at", "_pause_as", "max_pause", "paused")

    def __init__(self, guard: Guard, prices: PriceBook, user_id: str | None, max_pause: float | None = None) -> None:
        self.guard, self.prices, self.user_id = guard, prices, user_id
        self.max_pause = max_pause  # a provider's pause longer than this is not waited for (the Kit's max_retry_wait)
        self.paused: tuple[float, str] | None = None  # (seconds left, whose): this attempt is not sent
        self.held: Reservation | None = None
        self._tokens: dict[str, int] = {}
        self.send_at = 0.0  # the slot a rate limit booked for this attempt (time.time()); 0: none
        self._pause_as = ""  # what a 429 of this attempt pauses: its provider, or the key it uses

    def before(self, step: Step) -> None:
        """Hold this attempt's worst case (raises BudgetExceededError, holding nothing, if it does not fit)."""
        self.release()
        self.send_at, self.paused = 0.0, None
        fingerprint = step.provider.key_fingerprint
        self._pause_as = pause_name(step.provider.name, fingerprint)
        if not self.guard.active():
            return
        from .plan import request_tokens

        req = step.request
        if req.model not in self._tokens:
            self._tokens[req.model] = request_tokens(req, req.model)
        worst = step_worst_case(self.prices, step, self._tokens[req.model])
        self.held = self.guard.reserve(self.user_id, worst, f"{step.provider.name}/{req.model}", checked=True)
        try:
            wait, self.paused = self.guard.limits.admit(self.user_id, step.provider.name, req.model,
                                                        self._tokens[req.model] + req.max_tokens, fingerprint,
                                                        self.max_pause)
            self.send_at = time.time() + wait if wait > 0 else 0.0
        except BaseException:
            self.release()
            raise

    def settle(self, real_usd: float | None) -> None:
        """The attempt's real cost: added to every budget held, the rest released."""
        held, self.held = self.held, None
        if held is not None:
            self.guard.settle(held, real_usd)

    def release(self) -> None:
        self.settle(None)

    def retry_after(self, seconds: float) -> None:
        """The provider answered 429 asking to wait ``seconds``: every process on the guards store
        waits that long before its next attempt with the same key (or provider, without a key)."""
        if seconds > 0 and self._pause_as:
            try:
                self.guard.pause(self._pause_as, min(seconds, _MAX_PAUSE_S))
            except KitError as exc:  # the answer (or the fallback) matters more than telling the others
                warn_user(f"could not share the provider's Retry-After with other processes: {exc}", RuntimeWarning)
