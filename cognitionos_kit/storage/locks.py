"""Who may open a DuckDB database now: one opener per database at a time, across the threads of
this process and across kit processes."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .faults import storage_error
from .files import private_file

try:
    import fcntl
except ImportError:  # Windows: threads are still admitted one at a time, processes are not
    fcntl = None  # type: ignore[assignment]

__all__ = ["Gate", "gate"]


class Gate:
    """Admits one opener of one database at a time: threads of this process via an RLock, kit
    processes via ``flock`` on ``<db>.lock``. Waiting on a flock costs next to nothing, where a
    refused ``duckdb.connect`` costs a whole DuckDB start-up in CPU per try
    (measured by benchmarks/bench_choices.py; figures in the README)."""

    FAIR_GAP = 0.004  # pause between our back-to-back opens so a polling process gets its turn

    def __init__(self, lock_path: str) -> None:
        self.lock_path = lock_path
        self.rlock = threading.RLock()
        self.depth = 0
        self.attached = 0  # connects in progress that have the database attached (storage.instance)
        self.instance: Any = None  # the storage.instance.Instance it is attached to while attached > 0
        self.fd = -1
        self.released = 0.0
        self.private = False  # the lock file's mode was checked (files of older versions were 0644)

    @contextmanager
    def hold(self, deadline: float, timed_out: Callable[[str], BaseException], optional: bool = False) -> Iterator[None]:
        """With ``optional``, a lock file that cannot be opened at all (a read-only folder that has
        none) is skipped instead of raising: for readers that write nothing."""
        if not self.rlock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise timed_out("another thread of this process")
        try:
            if self.depth == 0 and fcntl is not None:
                self._flock(deadline, timed_out, optional)
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1
                if self.depth == 0 and self.fd >= 0:
                    os.close(self.fd)  # releases the flock
                    self.fd, self.released = -1, time.monotonic()
        finally:
            self.rlock.release()

    def _flock(self, deadline: float, timed_out: Callable[[str], BaseException], optional: bool) -> None:
        gap = self.released + self.FAIR_GAP - time.monotonic()
        if gap > 0:
            time.sleep(gap)
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            try:
                fd = os.open(self.lock_path, os.O_RDONLY)  # a read-only folder: a flock needs no write access
            except OSError:
                if optional:
                    return
                raise storage_error("cannot create the lock file", e, self.lock_path) from e
        if not self.private:
            private_file(self.lock_path)
            self.private = True
        delay = 0.0005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.fd = fd
                return
            except OSError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise timed_out(f"another cognitionos_kit process (it holds {self.lock_path})") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.002)


_GATES: dict[str, Gate] = {}
_REGISTRY_LOCK = threading.Lock()


def gate(db_path: str) -> Gate:
    """The one Gate of the database at ``db_path`` (its real path) in this process."""
    with _REGISTRY_LOCK:
        return _GATES.setdefault(db_path, Gate(db_path + ".lock"))


def _after_fork_in_child() -> None:
    # The child holds no gate: close its copies of the parent's lock files (the parent keeps its flock).
    global _REGISTRY_LOCK
    for g in _GATES.values():
        if g.fd >= 0:
            os.close(g.fd)
    _GATES.clear()
    _REGISTRY_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
