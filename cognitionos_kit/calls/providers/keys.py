"""Several API keys for one provider: which to try, in what order, and how long a refused key rests.

A call tries the provider's ready keys in the order given; a 429 (rate limit or quota) moves to the
next key at once and rests the key until its ``Retry-After`` (else ``RATE_LIMIT_COOLDOWN_S``); a 401
moves on and rests it for ``UNAUTHORIZED_COOLDOWN_S`` (a 403, often one model's permission, moves on
without resting it). When no key is ready, the one that rests the
shortest is tried, so a provider is never skipped for its keys alone (with one key: exactly as if
there were no ring). A success makes a key ready again. State is per Kit (per process).

Keys are shown, logged and recorded only as their fingerprint (``sha256:`` + 8 hex digits).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

__all__ = ["KeyRing", "fingerprint", "ROTATES_ON", "UNAUTHORIZED_COOLDOWN_S", "RATE_LIMIT_COOLDOWN_S"]

UNAUTHORIZED_COOLDOWN_S = 600.0  # a revoked or mistyped key: long enough not to pay a refused request per call
RATE_LIMIT_COOLDOWN_S = 30.0  # a 429 without Retry-After
ROTATES_ON = frozenset({"rate_limit", "auth_error"})  # error types that move to the provider's next key

READY, RATE_LIMITED, UNAUTHORIZED = "ready", "rate_limited", "unauthorized"


def fingerprint(key: str) -> str:
    """A short, stable name for a key that does not reveal it."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:8]


class KeyRing:
    """The keys of one provider and each one's state (ready, rate-limited or unauthorized until a time)."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = tuple(keys)
        self.fingerprints = tuple(fingerprint(k) for k in self._keys)
        self._state = [READY] * len(self._keys)
        self._until = [0.0] * len(self._keys)  # time.time() when a resting key is ready again
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"KeyRing({', '.join(self.fingerprints)})"

    def key(self, i: int) -> str:
        return self._keys[i]

    def _refresh(self, now: float) -> None:
        for i, until in enumerate(self._until):
            if self._state[i] != READY and until <= now:
                self._state[i], self._until[i] = READY, 0.0

    def order(self) -> list[int]:
        """The keys to try now, in order: every ready key, else the one ready soonest."""
        with self._lock:
            self._refresh(time.time())
            ready = [i for i, s in enumerate(self._state) if s == READY]
            if ready or not self._keys:
                return ready
            return [min(range(len(self._keys)), key=lambda i: self._until[i])]

    def failed(self, i: int, error_type: str | None, status_code: int | None, retry_after: float | None) -> None:
        """Rest key ``i`` after a 429 or a 401; other failures say nothing about the key."""
        if error_type == "rate_limit":
            state, rest = RATE_LIMITED, retry_after if retry_after is not None and retry_after > 0 \
                else RATE_LIMIT_COOLDOWN_S
        elif error_type == "auth_error" and status_code in (401, None):
            state, rest = UNAUTHORIZED, UNAUTHORIZED_COOLDOWN_S
        else:
            return
        with self._lock:
            self._state[i], self._until[i] = state, time.time() + rest

    def succeeded(self, i: int) -> None:
        with self._lock:
            self._state[i], self._until[i] = READY, 0.0

    def status(self) -> list[dict[str, Any]]:
        """Each key's fingerprint, state and when it is ready again (UTC ISO time; None when ready)."""
        with self._lock:
            self._refresh(time.time())
            return [{"fingerprint": f, "state": s,
                     "until": datetime.fromtimestamp(u, timezone.utc).isoformat(timespec="seconds") if s != READY
                     else None}
                    for f, s, u in zip(self.fingerprints, self._state, self._until)]
