"""The guard methods of ``Kit`` (``set_budget``, ``set_team``, ``budgets``, ``set_rate_limit``,
``limits``), kept here so the facade stays short."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import pandas as pd

    from ..storage.ledger import Ledger
    from .budgets import Guard

__all__ = ["GuardMethods"]


class GuardMethods:
    """Mixed into ``Kit``: needs its ``guard`` and ``ledger``."""

    guard: Guard

    if TYPE_CHECKING:
        @property
        def ledger(self) -> Ledger: ...

    def set_budget(self, usd: float | None, *, user_id: str | None = None, team: str | None = None,
                   period: Literal["day", "month", "total"] = "day") -> None:
        """A spending limit for a user, a team (``set_team``) or, with neither, the whole data folder,
        per UTC day, month or in total; every process on the folder keeps to it (a call that would
        not fit raises ``BudgetExceededError`` before sending). ``None`` removes it."""
        self.guard.set_budget(usd, user_id=user_id, team=team, period=period, spent_so_far=self.ledger.spent_since)

    def set_team(self, name: str, user_ids: Sequence[str]) -> None:
        """Name a group of users, for ``set_budget(team=...)``."""
        self.guard.set_team(name, user_ids)

    def budgets(self) -> pd.DataFrame:
        """Every budget of the data folder: its window, limit, spent, reserved (held for calls in
        flight and by processes' leases) and left."""
        return self.guard.frame()

    def set_rate_limit(self, *, user_id: str | None = None, provider: str | None = None, model: str | None = None,
                       rpm: float | None = None, tpm: float | None = None,
                       policy: Literal["wait", "raise"] = "wait") -> None:
        """Requests (``rpm``) and tokens (``tpm``: prompt plus ``max_tokens``) per minute for a user,
        a provider, a model or any mix (none: every call), kept by every process on the data
        folder. ``policy="wait"`` spaces calls out (async calls wait without blocking the loop);
        ``"raise"`` refuses a call that would wait with ``RateLimitExceededError``. Both None
        removes the limit."""
        self.guard.limits.set(user_id=user_id, provider=provider, model=model, rpm=rpm, tpm=tpm, policy=policy)

    def limits(self) -> pd.DataFrame:
        """Every rate limit of the data folder."""
        return self.guard.limits.frame()
