"""A SQLite file that every process on a data folder reads and writes at once (WAL mode).

Used where one short atomic write must be seen by all processes at once: the response cache and
the budgets (``guards``). DuckDB lets one process open a file at a time, so those two are not in
the DuckDB ``Store``.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from .files import private_dir, private_file

__all__ = ["open_shared"]


def open_shared(path: Path, schema: str, busy_timeout_s: float) -> sqlite3.Connection:
    """Open ``path`` (created 0600 in a 0700 folder) in WAL mode with ``schema`` applied.

    Switching a new file to WAL takes an exclusive lock that SQLite's busy timeout does not wait
    for, so two processes creating the file at once retry here; other errors are raised."""
    deadline = time.monotonic() + busy_timeout_s
    while True:
        try:
            return _open(path, schema, busy_timeout_s)
        except sqlite3.OperationalError as exc:
            if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _open(path: Path, schema: str, busy_timeout_s: float) -> sqlite3.Connection:
    private_dir(path.parent)
    # Created 0600 before SQLite opens it: its -wal and -shm files take the database file's mode.
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_s)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(schema)
    except BaseException:
        db.close()
        raise
    for suffix in ("", "-wal", "-shm"):  # files of older versions, or an unusual umask
        private_file(f"{path}{suffix}")
    return db
