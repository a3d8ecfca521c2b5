"""Failed-login throttling: at most ``limit`` failures per key (a user name, a client address) in
a sliding window of ``window_s`` seconds; past that, every attempt on the key is refused (the
password is not even checked) until the oldest failure leaves the window.

In the server process's memory: a restart forgets it, and one server process is what ``serve`` runs.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque

from ..core.errors import InvalidRequestError

__all__ = ["FailureThrottle"]

_PRUNE_AT = 10_000  # keys kept before stale ones are dropped (names an attacker invents included)


class FailureThrottle:
    """Failures per key in a sliding window."""

    def __init__(self, limit: int, window_s: float) -> None:
        if limit < 1 or not window_s > 0:
            raise InvalidRequestError(f"a throttle needs limit >= 1 and window_s > 0, got {limit!r}, {window_s!r}")
        self.limit, self.window_s = limit, window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FailureThrottle(limit={self.limit}, window_s={self.window_s})"

    def wait_s(self, key: str) -> float:
        """0 if ``key`` may try now, else the seconds until it may."""
        now = time.monotonic()
        with self._lock:
            times = self._recent(key, now)
            return 0.0 if len(times) < self.limit else times[0] + self.window_s - now

    def retry_after(self, key: str) -> int:
        """The ``Retry-After`` (whole seconds, at least 1) if ``key`` is blocked, else 0."""
        wait = self.wait_s(key)
        return max(1, math.ceil(wait)) if wait > 0 else 0

    def fail(self, key: str) -> None:
        """Count one failure against ``key``."""
        now = time.monotonic()
        with self._lock:
            if len(self._failures) > _PRUNE_AT:
                for stale in [k for k, t in self._failures.items() if not t or t[-1] <= now - self.window_s]:
                    del self._failures[stale]
            self._recent(key, now).append(now)

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times
