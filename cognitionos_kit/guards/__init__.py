"""Guards shared by every process on one data folder: budgets and rate limits.

* ``windows``: the UTC windows a budget counts in (a day, a month, all time);
* ``local``: the store behind them, a SQLite file in the data folder (no server needed);
* ``budgets``: what a call does with them: reserve its worst case before each attempt, settle the
  real cost after, so concurrent calls in any number of processes never pass a budget;
* ``limits``: requests and tokens per minute, evenly spaced, waited for or refused;
* ``watch``: what every ledger row also feeds: ``metrics`` (Prometheus), ``tracing`` (OpenTelemetry
  spans) and ``alerts`` (spend alerts, once per window).
"""

from .budgets import Guard, Reservation
from .limits import RateLimits, RateLimitWarning
from .local import LocalGuards
from .windows import PERIODS, resets_at, window_of

__all__ = ["Guard", "Reservation", "RateLimits", "RateLimitWarning", "LocalGuards", "PERIODS", "window_of", "resets_at"]
