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

A fatal DuckDB error can leave an instance unusable; :func:`discard` retires it: the next
operation starts a new one, and the retired one is closed when the last operation still using it
(another thread's, on another file) has ended; closing it under them failed their reads
("Connection already closed"). A file whose DETACH failed stays attached to the retired
instance: :func:`cursor` for that file waits until the retired instance is closed, so two
instances of this process never hold one file.

DuckDB is not fork-safe while an instance lives (its worker threads): a child forked with one
hung when it started its own. So an idle instance is closed just before a fork (the parent
starts a new one when it next needs it) and a child never uses its parent's.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from ..core.errors import StorageError

__all__ = ["Instance", "cursor", "release", "discard", "resident", "after", "LARGE_BYTES"]

LARGE_BYTES = 128 << 20

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class Instance:
    """One in-memory DuckDB and the operations (cursors) using it."""

    __slots__ = ("con", "pid", "users", "retired", "held")

    def __init__(self, con: Any) -> None:
        self.con, self.pid = con, os.getpid()
        self.users = 0
        self.retired = False
        self.held: set[str] = set()  # files it still has attached after a failed DETACH

    def close(self) -> None:
        if self.pid != os.getpid():
            return  # a parent's, copied into a forked child: not ours to close
        try:
            self.con.close()
        except Exception:  # noqa: BLE001 - it is being thrown away; a failed checkpoint leaves the WAL for the next open
            pass


_cond = threading.Condition()
_live: Instance | None = None
_retired: list[Instance] = []  # retired but still in use by some operation


def cursor(
    duckdb: Any,
    key: str = "",
    deadline: float | None = None,
    within: Instance | None = None,
    timed_out: Callable[[], BaseException] | None = None,
) -> tuple[Any, Instance]:
    """A new connection (``cursor()``) to this process's instance (or to ``within``, the one an
    enclosing operation attached its file to), started if need be, and the instance to
    :func:`release` when done. Waits (until ``deadline``, a ``time.monotonic()``) while a retired
    instance still holds ``key``'s file; then raises ``timed_out()``."""
    global _live
    with _cond:  # a DuckDB connection object is not for several threads at once: cursors are made one at a time
        inst = within
        if inst is None:
            while any(key in r.held for r in _retired):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise timed_out() if timed_out else StorageError(f"timed out waiting for DuckDB to let go of {key}")
                _cond.wait(left)
            if _live is None or _live.pid != os.getpid():
                _live = Instance(duckdb.connect(":memory:"))
            inst = _live
        con = inst.con.cursor()
        inst.users += 1
        return con, inst


def release(inst: Instance) -> None:
    """The operation that got a cursor from ``inst`` has closed it."""
    with _cond:
        inst.users -= 1
        done = inst.retired and inst.users <= 0
        if done and inst in _retired:
            _retired.remove(inst)
    if done:
        inst.close()
        with _cond:
            _cond.notify_all()


def resident() -> int:
    """This process's resident set in bytes (Linux; 0 where /proc is absent: nothing is ever closed)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def after(before: int) -> None:
    """Retire the instance if the process grew by more than ``LARGE_BYTES`` since ``before``
    (``resident()`` when the operation began)."""
    if before and resident() - before > LARGE_BYTES:
        discard()


def discard(inst: Instance | None = None, held: str = "") -> None:
    """Retire ``inst`` (this process's instance if None) after a fatal error, a DETACH that
    failed (``held``: the file it may still hold) or a large read; the next :func:`cursor` starts
    a new one. It is closed now if unused, else when its last operation releases it."""
    global _live
    with _cond:
        inst = inst or _live
        if inst is None:
            return
        if held:
            inst.held.add(held)  # also when another thread retired it first: it is still in use
        if inst.retired:
            return
        if inst is _live:
            _live = None
        inst.retired = True
        idle = inst.users <= 0
        if not idle:
            _retired.append(inst)
    if idle:
        inst.close()


def _before_fork() -> None:
    if _cond.acquire(blocking=False):  # else another thread is making a cursor: a fork now was never safe
        idle = _live is not None and _live.users == 0
        _cond.release()
        if idle:
            discard()  # in use by another thread: a fork now was never safe; it is left to that thread


def _after_fork_in_child() -> None:
    global _live, _cond, _retired
    _live, _cond, _retired = None, threading.Condition(), []  # the parent's instances are not ours to use or close


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
