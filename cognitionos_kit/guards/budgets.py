"""Budgets per user, per team and for the whole folder, over a UTC day, month or all time.

Before each attempt its worst case is reserved in every budget that applies; after, the real cost
settles and the rest is released. ``spent + reserved <= limit`` holds at every moment in every
process on the data folder, so concurrent calls cannot pass a budget (as long as a real cost is
at most its worst case, which the planner over-estimates on purpose).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.display import missing, money
from ..core.errors import BudgetExceededError, InvalidRequestError
from .leases import Lease, Leases
from .limits import RateLimits
from .local import BudgetKey, LocalGuards, Refusal
from .windows import PERIODS, resets_at, window_of, window_start

if TYPE_CHECKING:
    import pandas as pd

    from .redis import RedisGuards

    GuardStore = LocalGuards | RedisGuards

__all__ = ["Guard", "Reservation", "BUDGET_COLUMNS"]

BUDGET_COLUMNS = ["scope", "name", "period", "window", "limit_usd", "spent_usd", "reserved_usd", "left_usd",
                  "resets_at", "members"]


@dataclass
class Reservation:
    """The holds one attempt made (settled once)."""

    holds: list[tuple] = field(default_factory=list)
    usd: float = 0.0
    lease: Lease | None = None  # drawn from this process's lease (settled in memory), or held alone


_WINDOWS: tuple[int, dict[str, str]] = (-1, {})


def _windows(now: datetime) -> dict[str, str]:
    """The current window of each period (computed once per UTC day: every call asks)."""
    global _WINDOWS
    day = int(now.timestamp() // 86400)
    if _WINDOWS[0] != day:
        _WINDOWS = (day, {p: window_of(p, now) for p in PERIODS})
    return _WINDOWS[1]


def _who(key: BudgetKey) -> str:
    return "the whole data folder" if key.scope == "kit" else f"{key.scope} {key.name!r}"


class Guard:
    """The budgets of one data folder, as every call and ``kit.set_budget`` see them."""

    def __init__(self, home: str | Path, url: str | None = None) -> None:
        self.url = url  # a team's Redis (redis://...), or None: the data folder's file
        self.store: GuardStore
        if url:
            from .redis import RedisGuards

            self.store = RedisGuards(url)
        else:
            self.store = LocalGuards(home)
        self.limits = RateLimits(self.store)
        self.leases = Leases(self.store.settle)

    def close(self) -> None:
        """Write back what this process spent and give back its leases, then let go of the store."""
        try:
            self.leases.flush()
        finally:
            self.store.close()

    # --- calls ---------------------------------------------------------------------------------
    def active(self) -> bool:
        """Whether any budget or rate limit exists (no file yet: none, and nothing is created)."""
        if not self.store.exists():
            return False
        on = self.store.any_budget()
        self.leases.check_config(self.store.config_version)  # budgets changed: leases go back
        return on

    def reserve(self, user_id: str | None, worst_usd: float | None, what: str, *,
                checked: bool = False) -> Reservation | None:
        """Hold ``worst_usd`` in every budget that applies, or raise ``BudgetExceededError`` (nothing held).
        ``checked``: the caller has just seen ``active()`` say True."""
        if not checked and not self.active():
            return None
        if worst_usd is None:
            if not self.store.applies(user_id):
                return None
            raise InvalidRequestError(
                f"a budget applies to this call but {what} has no known price, so its cost cannot be bounded; "
                "set one with kit.set_price(...) or call a priced model")
        now = datetime.now(timezone.utc)
        windows = _windows(now)
        key = (user_id, windows["day"], windows["month"])
        lease = self.leases.draw(key, worst_usd)
        if lease is None:
            with self.leases.taking():
                self.leases.give_back(key)
                spare = self.leases.spare(key, worst_usd)
                got = self.store.reserve(user_id, worst_usd + spare, windows)
                if isinstance(got, Refusal) and spare:
                    spare, got = 0.0, self.store.reserve(user_id, worst_usd, windows)
                if isinstance(got, Refusal):
                    raise self._refused(got, worst_usd, what, now)
                lease = self.leases.take(key, got, worst_usd, spare, self.store.last_left)
        return Reservation(holds=lease.keys, usd=worst_usd, lease=lease) if lease.keys else None

    def hold_total(self, scope: str, name: str, limit_usd: float, usd: float) -> Reservation | None:
        """Hold ``usd`` in a total budget the caller keeps (an experiment run's ``budget_usd``), alone;
        None when it does not fit."""
        got = self.store.reserve(None, usd, _windows(datetime.now(timezone.utc)),
                                 [(BudgetKey(scope, name, "total"), limit_usd)], only_extra=True)
        return None if isinstance(got, Refusal) else Reservation(holds=got, usd=usd)

    def pause(self, provider: str, seconds: float) -> None:
        """Hold every call to ``provider`` for ``seconds`` in every process (its 429 said Retry-After)."""
        self.store.pause(provider, seconds)

    def settle(self, hold: Reservation, real_usd: float | None) -> None:
        """Add the attempt's real cost (None or NaN: nothing known was billed) and release the rest."""
        usd = 0.0 if real_usd is None or missing(real_usd) else float(real_usd)
        if hold.lease is not None:
            self.leases.settle(hold.lease, hold.usd, usd)
        else:
            self.store.settle(hold.holds, hold.usd, usd)

    def _refused(self, r: Refusal, worst: float, what: str, now: datetime) -> BudgetExceededError:
        left = max(0.0, r.limit_usd - r.spent_usd - r.held_usd)
        reset = resets_at(r.key.period, now)
        when = f"it resets at {reset:%Y-%m-%d %H:%M} UTC" if reset else "a total budget does not reset"
        period = {"day": "today (UTC)", "month": "this month (UTC)", "total": "in total"}[r.key.period]
        msg = (f"budget of {_who(r.key)} would be exceeded: {money(left)} left of {money(r.limit_usd)} {period} "
               f"(spent {money(r.spent_usd)}, {money(r.held_usd)} held for calls in flight), and {what} may cost up "
               f"to {money(worst)}. Nothing was sent; {when}. Raise it with kit.set_budget(...), or lower max_tokens.")
        return BudgetExceededError(msg, scope=r.key.scope, name=r.key.name or None, period=r.key.period,
                                   limit_usd=r.limit_usd, spent_usd=r.spent_usd, reserved_usd=r.held_usd,
                                   left_usd=left, needed_usd=worst, resets_at=reset)

    # --- settings -------------------------------------------------------------------------------
    def set_budget(self, usd: float | None, *, user_id: str | None, team: str | None, period: str,
                   spent_so_far: Callable[[datetime | None, list[str] | None], float]) -> None:
        """Set or (``usd=None``) remove a budget. ``spent_so_far(since, users)`` reads the ledger, so
        a budget set mid-window counts what its users already spent in it."""
        if period not in PERIODS:
            raise InvalidRequestError(f"period must be one of {', '.join(PERIODS)}, got {period!r}")
        if usd is not None and (isinstance(usd, bool) or not isinstance(usd, (int, float)) or not usd >= 0
                                or math.isinf(usd)):
            raise InvalidRequestError(f"a budget is a number of US dollars >= 0 (None removes it), got {usd!r}")
        if user_id is not None and team is not None:
            raise InvalidRequestError("a budget is for a user_id or a team (or, with neither, the whole data folder), not both")
        for value, name in ((user_id, "user_id"), (team, "team")):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise InvalidRequestError(f"{name} must be a non-empty string, got {value!r}")
        key = BudgetKey("user", user_id, period) if user_id else BudgetKey("team", team, period) if team \
            else BudgetKey("kit", "", period)
        now = datetime.now(timezone.utc)
        users = [user_id] if user_id else self.store.team_members(team) if team else None
        already = 0.0 if usd is None or (team and not users) else spent_so_far(window_start(period, now), users)
        self.leases.flush()  # what this process spent is in the store before the window restarts from the ledger
        self.store.set_budget(key, None if usd is None else float(usd), window_of(period, now), already)
        self.leases.flush()

    def set_team(self, team: str, user_ids: Sequence[str]) -> None:
        if not isinstance(team, str) or not team.strip():
            raise InvalidRequestError(f"a team needs a name, got {team!r}")
        if isinstance(user_ids, str) or not all(isinstance(u, str) and u.strip() for u in user_ids):
            raise InvalidRequestError(f"user_ids must be a list of user ids, got {user_ids!r}")
        self.store.set_team(team, sorted(set(user_ids)))
        self.leases.flush()  # a user's budgets changed

    def frame(self) -> pd.DataFrame:
        import pandas as pd

        now = datetime.now(timezone.utc)
        rows: list[dict[str, Any]] = []
        self.leases.flush()  # this process's spending shows at once
        if self.store.exists():
            for r in self.store.rows(_windows(now)):
                r["left_usd"] = max(0.0, r["limit_usd"] - r["spent_usd"] - r["reserved_usd"])
                r["resets_at"] = resets_at(r["period"], now)
                r["members"] = ", ".join(self.store.team_members(r["name"])) if r["scope"] == "team" else None
                r["name"] = r["name"] or None
                rows.append(r)
        df = pd.DataFrame(rows, columns=BUDGET_COLUMNS)
        df["resets_at"] = pd.to_datetime(df["resets_at"], utc=True)
        from ..storage.frames import tidy

        return tidy(df)
