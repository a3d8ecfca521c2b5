"""Rate limits per user, provider and model: requests and tokens per minute, kept by every
process on the data folder (the slots are booked in its guards file, see ``local.admit``).

A limit spaces calls evenly at its pace (60 / rpm seconds apart; a call of n tokens moves a tpm
limit on by n x 60 / tpm seconds), so no minute ever holds more than the limit. ``policy="wait"``
books the next slot and the call waits for it (``asyncio.sleep`` in async calls, with a
``RateLimitWarning`` when the wait is long enough to notice); ``"raise"`` refuses a call that
would have to wait with ``RateLimitExceededError``, before anything is sent.
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING

from ..core.errors import InvalidRequestError, RateLimitExceededError, RateLimitWarning, warn_user

if TYPE_CHECKING:
    import pandas as pd

    from .budgets import GuardStore

__all__ = ["RateLimits", "RateLimitWarning", "LIMIT_COLUMNS"]

LIMIT_COLUMNS = ["user_id", "provider", "model", "rpm", "tpm", "policy"]
_NOTICE_S = 1.0  # waits longer than this are announced


def _describe(lim: tuple) -> str:
    if not lim[0]:
        return f"{lim[2].replace('#', ' key ')}, which answered 429 asking to wait (Retry-After)"
    who = ", ".join(f"{k} {v!r}" for k, v in zip(("user", "provider", "model"), lim[1:4]) if v is not None) or "the folder"
    pace = " and ".join(f"{v:g} {u}" for v, u in ((lim[4], "requests"), (lim[5], "tokens")) if v)
    return f"{pace} per minute for {who}"


def pause_name(provider: str, key: str | None) -> str:
    """What a 429's pause is kept under: the key that got it (other keys of the provider may be
    fine), or the provider itself when it has no key (a local server)."""
    return f"{provider}#{key}" if key else provider


def pause_names(provider: str, key: str | None) -> tuple[str, ...]:
    """The pauses that hold an attempt with ``key``: the provider's and the key's."""
    return (provider, pause_name(provider, key)) if key else (provider,)


class RateLimits:
    """``kit.set_rate_limit`` / ``kit.limits`` and what a call asks before each attempt."""

    def __init__(self, store: GuardStore) -> None:
        self.store = store

    def set(self, *, user_id: str | None, provider: str | None, model: str | None, rpm: float | None,
            tpm: float | None, policy: str) -> None:
        for value, name in ((rpm, "rpm"), (tpm, "tpm")):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not value > 0 or math.isinf(value)):
                raise InvalidRequestError(f"{name} must be a positive number per minute (None: no limit), got {value!r}")
        if policy not in ("wait", "raise"):
            raise InvalidRequestError(f"policy must be 'wait' or 'raise', got {policy!r}")
        for text, name in ((user_id, "user_id"), (provider, "provider"), (model, "model")):
            if text is not None and (not isinstance(text, str) or not text.strip()):
                raise InvalidRequestError(f"{name} must be a non-empty string or None, got {text!r}")
        scope = (user_id, provider, model)
        key = hashlib.sha256(repr(scope).encode()).hexdigest()[:16]
        self.store.set_rate_limit(key, scope, None if rpm is None else float(rpm), None if tpm is None else float(tpm),
                                  policy)

    def admit(self, user_id: str | None, provider: str, model: str, tokens: int, key: str | None = None,
              max_pause: float | None = None) -> tuple[float, tuple[float, str] | None]:
        """Book this attempt's slot -> (seconds to wait before sending, None), or RateLimitExceededError.
        ``key``: the fingerprint of the API key it uses (a 429 may have paused just that key). A
        pause (a 429's Retry-After) longer than ``max_pause`` books nothing and gives (0, (seconds
        left, whose pause)): the caller does not send, so the call can move on at once."""
        if not self.store.has_limits():
            return 0.0, None
        wait, limits = self.store.admit(user_id, provider, model, tokens, pause_names(provider, key), max_pause)
        if wait <= 0:
            return 0.0, None
        pauses = [lim for lim in limits if not lim[0]]
        if pauses and max_pause is not None and wait > max_pause:
            return 0.0, (wait, pauses[0][2])
        which = "; ".join(_describe(lim) for lim in limits) or "a rate limit"
        if any(lim[6] == "raise" for lim in limits):
            raise RateLimitExceededError(
                f"{provider}/{model} would pass the rate limit of {which}: it fits in {wait:.2f} s. Nothing was sent; "
                "wait and call again, or use policy='wait' to let the kit wait.", wait_s=wait)
        if wait >= _NOTICE_S:
            warn_user(f"waiting {wait:.1f} s for the rate limit of {which}", RateLimitWarning)
        return wait, None

    def frame(self) -> pd.DataFrame:
        import pandas as pd

        from ..storage.frames import tidy

        rows = self.store.limit_rows() if self.store.exists() else []
        return tidy(pd.DataFrame([r[1:] for r in rows], columns=LIMIT_COLUMNS))
