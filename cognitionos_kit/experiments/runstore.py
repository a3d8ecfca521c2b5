"""A run's answers on their way into the response cache, written by one background thread.

An experiment run stores its answers ``FLUSH_EVERY`` at a time, one transaction each (a process
killed mid-run loses at most those; the ledger has them). Written on the event loop, each write
stopped every call in flight for 1-10 ms (the longer ones when SQLite checkpoints its WAL), and
closing the file at the end checkpoints again. Here the writes and the close run in order on one
thread of their own (SQLite releases the GIL while it works), and the run waits for them before
it returns: a failed write still fails the run, as it did. Until written, an answer is served to
the run's own lookups from here.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

__all__ = ["RunStore", "FLUSH_EVERY"]

FLUSH_EVERY = 64


class RunStore:
    """``put`` answers, ``get`` the ones not yet in the file, ``close`` (write the rest, close the
    cache) and ``wait`` for it all; ``cache``: a ``ResponseCache`` or ``RedisResponseCache``."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache
        self.pending: dict[str, dict] = {}  # not handed to the writer yet
        self.written: dict[str, dict] = {}  # handed to it (written, or being written)
        self._pool: ThreadPoolExecutor | None = None
        self._jobs: list[Future] = []

    def get(self, key: str) -> dict | None:
        return self.pending.get(key) or self.written.get(key)

    def put(self, key: str, entry: dict) -> None:
        self.pending[key] = entry
        if len(self.pending) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Hand the pending answers to the writer (one transaction)."""
        if self.pending:
            items, self.pending = list(self.pending.items()), {}
            self.written.update(items)
            self._submit(self.cache.put_many, items)

    def close(self) -> None:
        """Write what is pending and close the cache, on the writer; ``wait`` for the end."""
        try:
            self.flush()
        finally:
            self._submit(self.cache.close)

    def wait(self) -> None:
        """Until every write and the close are done; raises the first write's error (a ``StorageError``)."""
        jobs, self._jobs = self._jobs, []
        try:
            errors = [exc for job in jobs if (exc := job.exception()) is not None]
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
        if errors:
            raise errors[0]

    def _submit(self, fn: Any, *args: Any) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="kit-run-cache")
        self._jobs.append(self._pool.submit(fn, *args))
