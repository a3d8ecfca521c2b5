"""The response cache: answers by key in ``<home>/cache/answers.sqlite``.

Why SQLite (Python's ``sqlite3``) and not the DuckDB ``Store``: a lookup must be fast in the
middle of a run and must see answers another process wrote a moment ago, while both processes
keep writing. DuckDB lets one process open a file at a time; SQLite in WAL mode lets any number
read and write at once, each write one short transaction (about 40 us here, where creating and
renaming one file per answer took 100-400 us, on the event loop's thread). ``synchronous=NORMAL``
makes a committed answer survive the process being killed (not a power cut, which costs at most
a re-sent call). Only successful answers are written; errors never are.

The key is a SHA-256 of the intended provider, model, full request (messages, system,
max_tokens, temperature, seed) and the repeat index, so repeats are distinct, separately cached
samples. Caches written by earlier versions (one JSON file per answer under
``<home>/cache/<key[:2]>/``) are still read.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import StorageError
from ..types import ProviderRequest

__all__ = ["ResponseCache", "cache_key"]

_BUSY_TIMEOUT_MS = 30_000  # another process holding the write lock for a moment is normal


def cache_key(provider: str, request: ProviderRequest, repeat: int) -> str:
    """Stable hash of what decides an answer (the stream flag excluded: same answer either way)."""
    blob = json.dumps(
        {
            "provider": provider,
            "model": request.model,
            "messages": [[m.role, m.content] for m in request.messages],
            "system": request.system,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "seed": request.seed,
            "repeat": repeat,
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """Get/put cached answers by key; ``clear()`` empties it. Safe from several threads and processes."""

    def __init__(self, home: str | Path) -> None:
        self.root = Path(home) / "cache"
        self.path = self.root / "answers.sqlite"
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # one connection, used from the caller's and the run's thread
        self._legacy = self.root.is_dir() and any(p.is_dir() for p in self.root.iterdir())

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
            while True:
                try:
                    self._db = self._open()
                    break
                except sqlite3.OperationalError as exc:
                    # switching a new file to WAL takes an exclusive lock that SQLite's busy
                    # timeout does not wait for: two processes creating the cache at once retry
                    if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                        raise StorageError(f"cannot open the response cache {self.path}: {exc}") from None
                    time.sleep(0.02)
                except (OSError, sqlite3.Error) as exc:
                    raise StorageError(f"cannot open the response cache {self.path}: {exc}") from None
        return self._db

    def _open(self) -> sqlite3.Connection:
        self.root.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=_BUSY_TIMEOUT_MS / 1000)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, entry TEXT NOT NULL) WITHOUT ROWID")
        except BaseException:
            db.close()
            raise
        return db

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn().execute("SELECT entry FROM answers WHERE key = ?", (key,)).fetchone()
        if row is not None:
            return json.loads(row[0])
        return self._legacy_get(key) if self._legacy else None

    def _legacy_get(self, key: str) -> dict[str, Any] | None:
        try:
            with open(self.root / key[:2] / f"{key}.json", encoding="utf-8") as f:
                return json.load(f)
        except (FileNotFoundError, NotADirectoryError, ValueError):  # absent, or corrupted by hand: a miss
            return None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        data = json.dumps(entry, ensure_ascii=False)
        with self._lock:
            try:
                self._conn().execute("INSERT OR REPLACE INTO answers (key, entry) VALUES (?, ?)", (key, data))
            except sqlite3.Error as exc:
                raise StorageError(f"cannot write to the response cache {self.path}: {exc}") from None

    def __len__(self) -> int:
        if not self.path.exists():
            n = 0
        else:
            with self._lock:
                n = self._conn().execute("SELECT count(*) FROM answers").fetchone()[0]
        if self._legacy:
            n += sum(1 for _ in self.root.glob("*/*.json"))
        return n

    def clear(self) -> int:
        """Delete every cached answer; returns how many there were."""
        n = len(self)
        if self.path.exists():
            with self._lock:
                self._conn().execute("DELETE FROM answers")
        if self._legacy:
            for folder in [p for p in self.root.iterdir() if p.is_dir()]:
                shutil.rmtree(folder, ignore_errors=True)
            self._legacy = False
        return n

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r})"
