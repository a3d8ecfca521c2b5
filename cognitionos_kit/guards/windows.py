"""The UTC windows a budget counts in."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

__all__ = ["PERIODS", "window_of", "window_start", "resets_at"]

PERIODS = ("day", "month", "total")


def window_of(period: str, now: datetime) -> str:
    """The window ``now`` falls in: ``2026-12-03``, ``2026-12`` or ``total``."""
    now = now.astimezone(timezone.utc)
    if period == "day":
        return now.strftime("%Y-%m-%d")
    if period == "month":
        return now.strftime("%Y-%m")
    return "total"


def window_start(period: str, now: datetime) -> datetime | None:
    """When the window of ``now`` began (None: all time)."""
    now = now.astimezone(timezone.utc)
    if period == "day":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return None


def resets_at(period: str, now: datetime) -> datetime | None:
    """When the window of ``now`` ends (None: a total budget never resets)."""
    start = window_start(period, now)
    if start is None:
        return None
    if period == "day":
        return start + timedelta(days=1)
    return (start + timedelta(days=32)).replace(day=1)
