"""One in-memory DuckDB per process, into which a :class:`Store` attaches its database file for
the length of one operation (``ATTACH`` ... ``DETACH``) instead of starting DuckDB for it.

Starting DuckDB (``duckdb.connect(path)``) costs about 12 ms of CPU on a 2-core machine (its
thread pool, allocator and catalog) and its first scans run cold: ``spend(by="model")`` over a
million ledger rows took 72 ms on a fresh connection against 41 ms on one kept open, and 42 ms
attached to this kept instance (the ``ATTACH`` and ``DETACH`` themselves: 0.8 ms). The file is
locked only while it is attached, as it was only while it was open, and ``DETACH`` checkpoints
it as closing did, so other processes open it between our operations exactly as before.

An instance keeps what its allocator took for a large read (a million-row ``usage()``: 0.3 GiB
more than a fresh process would keep), so an operation that grew the process by more than
``LARGE_BYTES`` closes it afterwards (:func:`after`): the next read pays the 12 ms start again.

A fatal DuckDB error can leave an instance unusable; :func:`discard` drops it (the next
operation starts a new one). DuckDB is not fork-safe while an instance lives (its worker
threads): a child forked with one hung when it started its own. So the instance is closed just
before a fork (the parent starts a new one when it next needs it) and a child never uses its
parent's.
"""

from __future__ import annotations

import os
import threading
from typing import Any

__all__ = ["cursor", "discard", "resident", "after", "LARGE_BYTES"]

LARGE_BYTES = 128 << 20

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_lock = threading.Lock()
_base: Any = None
_pid = -1


def cursor(duckdb: Any) -> Any:
    """A new connection (``cursor()``) to this process's instance, started if need be."""
    global _base, _pid
    with _lock:  # a DuckDB connection object is not for several threads at once: cursors are made one at a time
        if _base is None or _pid != os.getpid():
            _base, _pid = duckdb.connect(":memory:"), os.getpid()
        return _base.cursor()


def resident() -> int:
    """This process's resident set in bytes (Linux; 0 where /proc is absent: nothing is ever closed)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def after(before: int) -> None:
    """Close the instance if the process grew by more than ``LARGE_BYTES`` since ``before``
    (``resident()`` when the operation began)."""
    if before and resident() - before > LARGE_BYTES:
        discard()


def discard() -> None:
    """Close this process's instance (after a fatal error, or a DETACH that failed: it may hold a
    file's lock); the next :func:`cursor` starts a new one."""
    global _base
    with _lock:
        base, _base = _base, None
    if base is not None and _pid == os.getpid():
        try:
            base.close()
        except Exception:  # noqa: BLE001 - it is being thrown away; a failed checkpoint leaves the WAL for the next open
            pass


def _before_fork() -> None:
    if _lock.acquire(blocking=False):  # else another thread is making a cursor: a fork now was never safe
        _lock.release()
        discard()


def _after_fork_in_child() -> None:
    global _base, _lock
    _base, _lock = None, threading.Lock()  # the parent's instance is not ours to use or close


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
