"""Per-process leases on budgets, so most calls never touch the guards store.

Holding and settling every call in the store costs a transaction each way (SQLite) or a round
trip each way (Redis): more than the 0.1 ms (local) and 0.5 ms (Redis) a call may spend on
guards. So a process holds a little more than a call needs, its *lease*, and serves the next calls'
worst cases from it in memory; real costs add up in memory too and are written back (spent added,
the rest of the lease given back) at least every ``FLUSH_S`` seconds, when the lease runs short,
after ``FLUSH_S`` without calls (a background thread), when the Kit closes and when the process
exits. Whatever a process holds in the store always covers its calls in flight, what they spent
that is not written yet and the unused rest, so ``spent + held <= limit`` stays true in the store
and no process can pass a budget.

A lease is small on purpose: at most ``LEASE_CALLS`` worst cases and ``LEASE_SHARE`` of what the
tightest budget had left, so near a limit calls are held one by one, exactly, and an idle
process's lease comes back within a second. The first reservation of a user's budgets, and every
one after the lease was given back, is exact, and settles at once. What a process that is killed
(not one that exits) spent since it last wrote back, at most ``FLUSH_S`` of calls, is missing
from the budget's tally (the ledger still has every row; ``set_budget`` again recounts from it).
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

__all__ = ["Lease", "Leases", "LEASE_CALLS", "LEASE_SHARE", "FLUSH_S"]

LEASE_CALLS = 20  # a lease holds at most this many worst cases beyond the call that takes it
LEASE_SHARE = 0.05  # and at most this share of what the tightest budget had left
FLUSH_S = 1.0  # what a process spent is written back at least this often, and an idle lease returned


@dataclass
class Lease:
    """What one process holds in the store for one user's budgets in one set of windows.

    Always ``held in the store == in_flight + free + pending``."""

    keys: list[tuple]  # the store's hold keys (empty: no budget applies to this user)
    free: float = 0.0  # held, not promised to any call yet
    in_flight: float = 0.0  # worst cases of calls under way
    pending: float = 0.0  # real costs not yet written to the store
    exact: bool = True  # taken with nothing to spare: each settle is written at once
    retired: bool = False  # given back: late settles are written at once


class Leases:
    """The leases of one ``Guard``; ``settle_store(keys, held_usd, spent_usd)`` writes back."""

    def __init__(self, settle_store: Callable[[list[tuple], float, float], None]) -> None:
        self._settle = settle_store
        self._leases: dict[tuple, Lease] = {}
        self._lock = threading.RLock()
        self._last_call = time.monotonic()
        self._last_flush = time.monotonic()
        self._idle: threading.Thread | None = None
        self._config: Any = None  # the store's config version the leases were taken under
        self._left: dict[tuple, float] = {}  # what the tightest budget had left at the last take, per key
        _LIVE.add(self)

    # --- a call -----------------------------------------------------------------------------------
    def draw(self, key: tuple, usd: float) -> Lease | None:
        """The lease for ``key`` with ``usd`` moved from free to in flight, or None (take one)."""
        with self._lock:
            self._last_call = now = time.monotonic()
            if now - self._last_flush > FLUSH_S:  # a busy process writes back (and re-reads budgets) each second
                self.flush()
                return None
            lease = self._leases.get(key)
            if lease is None or lease.free < usd:
                return None
            lease.free -= usd
            lease.in_flight += usd
            return lease

    def take(self, key: tuple, keys: list[tuple], usd: float, extra: float, left: float) -> Lease:
        """Record what the store just held for ``key``: ``usd`` for the call, ``extra`` to spare
        (``left``: what the tightest budget had left after it)."""
        with self._lock:
            old = self._leases.get(key)
            if old is not None:
                self._give_back(old)
            self._left[key] = left
            lease = Lease(keys=keys, free=extra if keys else float("inf"), in_flight=usd, exact=extra <= 0 and bool(keys))
            self._leases[key] = lease
            if not lease.exact:
                self._watch()
            return lease

    def taking(self) -> AbstractContextManager[Any]:
        """``with leases.taking():`` one taker at a time (the store's ``last_left`` is that take's)."""
        return self._lock

    def spare(self, key: tuple, usd: float) -> float:
        """How much to hold beyond ``usd`` when taking a lease for ``key``: none the first time
        (what is left is not known yet), then a little, shrinking as the budgets fill."""
        with self._lock:
            left = self._left.get(key, 0.0)
        return min(LEASE_CALLS * usd, LEASE_SHARE * left) if left > 0 else 0.0

    def give_back(self, key: tuple) -> None:
        with self._lock:
            lease = self._leases.pop(key, None)
            if lease is not None:
                self._give_back(lease)

    def settle(self, lease: Lease, worst: float, real: float) -> None:
        """A call drawn from ``lease`` cost ``real`` (it held ``worst``)."""
        with self._lock:
            lease.in_flight -= worst
            lease.pending += real
            lease.free += worst - real
            if lease.exact or lease.retired:
                self._write(lease, give_free=True)

    # --- writing back ---------------------------------------------------------------------------
    def check_config(self, version: Any) -> None:
        """Give every lease back when budgets, teams or limits changed (``version`` moved)."""
        with self._lock:
            if version != self._config:
                self._config = version
                self._left.clear()
                self.flush()

    def flush(self) -> None:
        """Write back what every lease spent and give back what it does not use."""
        with self._lock:
            self._last_flush = time.monotonic()
            leases, self._leases = list(self._leases.values()), {}
            for lease in leases:
                self._give_back(lease)

    def _give_back(self, lease: Lease) -> None:
        lease.retired = True
        self._write(lease, give_free=True)

    def _write(self, lease: Lease, give_free: bool) -> None:
        free = max(lease.free, 0.0) if give_free and lease.free != float("inf") else 0.0
        if lease.keys and (lease.pending or free):
            self._settle(lease.keys, lease.pending + free, lease.pending)
        lease.pending = 0.0
        if give_free:
            lease.free = 0.0

    def _watch(self) -> None:
        """Start the thread that gives leases back after ``FLUSH_S`` without calls (if not running)."""
        if self._idle is None or not self._idle.is_alive():
            self._idle = threading.Thread(target=_idle_loop, args=(weakref.ref(self),), daemon=True,
                                          name="cognitionos-budget-leases")
            self._idle.start()

    def idle_for(self) -> float:
        return time.monotonic() - self._last_call

    def has_spare(self) -> bool:
        with self._lock:
            return any(lease.keys and (lease.free or lease.pending) for lease in self._leases.values())

    def forget(self) -> None:
        """In a forked child: the leases are the parent's (held under its pid), not ours."""
        self._leases = {}
        self._lock = threading.RLock()
        self._idle = None


def _idle_loop(ref: weakref.ref[Leases]) -> None:
    while True:
        leases = ref()
        if leases is None:
            return
        wait = FLUSH_S - leases.idle_for()
        if wait <= 0:
            try:
                leases.flush()
            except Exception:  # noqa: BLE001 - a store out of reach: the next call (or exit) writes back
                pass
            if not leases.has_spare():
                leases._idle = None
                return
            wait = FLUSH_S
        del leases
        time.sleep(max(wait, 0.05))


_LIVE: weakref.WeakSet[Leases] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    for leases in list(_LIVE):
        try:
            leases.flush()
        except Exception:  # noqa: BLE001, S110 - at exit, a store out of reach cannot be helped
            pass


def _forget_all() -> None:
    for leases in list(_LIVE):
        leases.forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_all)
