"""The response cache: answers by key in ``<home>/cache/answers.sqlite``.

Why SQLite (Python's ``sqlite3``) and not the DuckDB ``Store``: a lookup must be fast in the
middle of a run and must see answers another process wrote a moment ago, while both processes
keep writing. DuckDB lets one process open a file at a time; SQLite in WAL mode lets any number
read and write at once, each write one short transaction, on the event loop's thread: cheaper
than creating and renaming one file per answer, as earlier versions did (measured by
benchmarks/bench_choices.py; figures in the README). ``synchronous=NORMAL``
makes a committed answer survive the process being killed (not a power cut, which costs at most
a re-sent call). Only successful answers are written; errors never are.

The key is a SHA-256 of the intended provider, model, full request (messages, system,
max_tokens, temperature, seed) and the repeat index, so repeats are distinct, separately cached
samples. Caches written by earlier versions (one JSON file per answer under
``<home>/cache/<key[:2]>/``) are still read.

The cache never lies and never stops a run: an entry that is not valid JSON, not an object, or
lacks a required field is a miss with a ``CacheWarning`` (the call is sent again and the entry
replaced); a cache file that is not a database (garbage bytes, truncated) makes every lookup a
miss and every store a no-op, with one ``CacheWarning`` saying ``kit.clear_cache()`` repairs it,
which it does (by replacing the file). The file is private to the user (0600, folder 0700).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson

from ..core.errors import CacheWarning, StorageError, warn_user
from ..core.types import ProviderRequest
from .faults import cause
from .sqlite import open_shared

__all__ = ["ResponseCache", "cache_key", "open_cache", "entry_text", "parse_entry", "clear_cache"]

T = TypeVar("T")
_BUSY_TIMEOUT_MS = 30_000  # another process holding the write lock for a moment is normal
_SCHEMA = "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, entry TEXT NOT NULL) WITHOUT ROWID"


def cache_key(provider: str, request: ProviderRequest, repeat: int) -> str:
    """Stable hash of what decides an answer (the stream flag excluded: same answer either way)."""
    blob = json.dumps(
        {
            "provider": provider,
            "model": request.model,
            "messages": [m.key() for m in request.messages],
            "system": request.system,
            "max_tokens": request.max_tokens,
            "temperature": None if request.temperature is None else float(request.temperature),  # 0 and 0.0 alike
            "seed": request.seed,
            **({"sampling": request.sampling.as_dict()} if request.sampling is not None else {}),
            "repeat": repeat,
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """Get/put cached answers by key; ``clear()`` empties it. Safe from several threads and processes.

    ``required``: fields an entry must hold to be served; an entry without one is a miss with a
    ``CacheWarning``. The default asks for ``content`` only (what every answer has); the runner's
    entries also hold ``provider``, ``model`` and ``cost_usd``.
    """

    def __init__(self, home: str | Path, *, required: Sequence[str] = ("content",)) -> None:
        self.root = Path(home) / "cache"
        self.path = self.root / "answers.sqlite"
        self.required = tuple(required)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # one connection, used from the caller's and the run's thread
        self._legacy = self.root.is_dir() and any(p.is_dir() for p in self.root.iterdir())
        self._damaged: str | None = None  # why the file cannot be used: every get misses, every put is skipped
        self._warned = False  # one warning about a damaged file per ResponseCache

    def _conn(self) -> sqlite3.Connection:
        if self._damaged is not None:
            raise _Damaged(self._damaged)
        if self._db is None:
            try:
                self._db = open_shared(self.path, _SCHEMA, _BUSY_TIMEOUT_MS / 1000)
            except sqlite3.OperationalError as exc:
                raise StorageError(f"cannot open the response cache {self.path}: {exc}") from None
            except sqlite3.DatabaseError as exc:
                if _is_damaged(exc):
                    self._damaged = str(exc)
                    raise _Damaged(self._damaged) from None
                raise StorageError(f"cannot open the response cache {self.path}: {exc}") from None
            except (OSError, sqlite3.Error) as exc:
                raise StorageError(f"cannot open the response cache {self.path}: {_why(exc)}") from None
        return self._db

    def _broken(self, exc: BaseException, warn: bool = True) -> None:
        """Note that the file is damaged (``exc`` says how) and warn, once per ResponseCache."""
        if self._damaged is None:
            self._damaged = str(exc)
            if self._db is not None:
                try:
                    self._db.close()
                except sqlite3.Error:
                    pass
                self._db = None
        if warn and not self._warned:
            self._warned = True
            warn_user(
                f"the response cache {self.path} is damaged ({self._damaged}): answers are neither read from "
                "nor stored in it until kit.clear_cache() repairs it (it replaces the file)",
                CacheWarning)

    def _locked(self, what: str, fn: Callable[[sqlite3.Connection], T], default: T) -> T:
        """``fn(connection)`` under the lock. A damaged file is noted (one CacheWarning) and gives
        ``default``; any other SQLite error is a StorageError saying what could not be done."""
        with self._lock:
            try:
                return fn(self._conn())
            except _Damaged as exc:
                self._broken(exc)
            except sqlite3.Error as exc:
                if not (isinstance(exc, sqlite3.DatabaseError) and _is_damaged(exc)):
                    raise StorageError(f"cannot {what} the response cache {self.path}: {exc}") from None
                self._broken(exc)
        return default

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached entry for ``key``, or None (a miss, also for an unreadable entry or file)."""
        row = self._locked("read", lambda db: db.execute("SELECT entry FROM answers WHERE key = ?", (key,)).fetchone(),
                           None)
        if row is not None:
            return self._entry(row[0], key, f"{self.path}", 3)
        return self._legacy_get(key) if self._legacy else None

    def get_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The entries of those ``keys`` that are cached, by key (a few queries, not one per key)."""
        unique = list(dict.fromkeys(keys))

        def read(db: sqlite3.Connection) -> dict[str, Any]:
            found: dict[str, Any] = {}
            for i in range(0, len(unique), 500):  # SQLite's bound-parameter limit
                chunk = unique[i:i + 500]
                sql = f"SELECT key, entry FROM answers WHERE key IN ({','.join('?' * len(chunk))})"
                found.update(db.execute(sql, chunk).fetchall())
            return found

        found: dict[str, Any] = self._locked("read", read, {})
        out = {k: e for k, text in found.items() if (e := self._entry(text, k, f"{self.path}", 3)) is not None}
        if self._legacy:
            out.update({k: e for k in unique if k not in out and (e := self._legacy_get(k)) is not None})
        return out

    def _entry(self, text: Any, key: str, where: str, stacklevel: int) -> dict[str, Any] | None:
        return parse_entry(text, key, where, self.required)

    def _legacy_get(self, key: str) -> dict[str, Any] | None:
        path = self.root / key[:2] / f"{key}.json"
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except (FileNotFoundError, NotADirectoryError):  # absent: a miss
            return None
        return self._entry(raw, key, str(path), 4)

    def put(self, key: str, entry: dict[str, Any]) -> None:
        """Store ``entry`` under ``key`` (replacing any); skipped, with a CacheWarning, if the file is damaged."""
        self.put_many([(key, entry)])

    def put_many(self, items: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """``put`` each ``(key, entry)`` in one transaction (an experiment run stores its answers so)."""
        if not items:
            return
        data = [(key, entry_text(entry)) for key, entry in items]

        def write(db: sqlite3.Connection) -> None:
            if len(data) == 1:  # one statement is its own transaction
                db.execute("INSERT OR REPLACE INTO answers (key, entry) VALUES (?, ?)", data[0])
                return
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT OR REPLACE INTO answers (key, entry) VALUES (?, ?)", data)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

        self._locked("write to", write, None)

    def __len__(self) -> int:
        with self._lock:
            n = self._count()
        if self._legacy:
            n += sum(1 for _ in self.root.glob("*/*.json"))
        return n

    def _count(self, warn: bool = True) -> int:
        """Entries in the file (0 if there is none, or it is damaged); call with the lock held."""
        if not self.path.exists():
            return 0
        try:
            return self._conn().execute("SELECT count(*) FROM answers").fetchone()[0]
        except _Damaged as exc:
            self._broken(exc, warn)
            return 0
        except sqlite3.DatabaseError as exc:
            if not _is_damaged(exc):
                raise StorageError(f"cannot read the response cache {self.path}: {exc}") from None
            self._broken(exc, warn)
            return 0

    @classmethod
    def clear_folder(cls, home: str | Path) -> int:
        """``clear`` the cache under ``home`` (``kit.clear_cache()``)."""
        cache = cls(home)
        try:
            return cache.clear()
        finally:
            cache.close()

    def clear(self) -> int:
        """Delete every cached answer; returns how many there were (those that could be counted).

        A damaged file is replaced by a fresh one: this is how ``kit.clear_cache()`` repairs it."""
        with self._lock:
            n = self._count(warn=False)
            if self._damaged is not None:
                for suffix in ("", "-wal", "-shm", "-journal"):
                    try:
                        os.unlink(f"{self.path}{suffix}")
                    except FileNotFoundError:
                        pass
                    except OSError as exc:
                        raise StorageError(f"cannot replace the damaged response cache {self.path}: {_why(exc)}") from None
                self._damaged, self._warned = None, False
                self._conn()
            elif self.path.exists():
                self._conn().execute("DELETE FROM answers")
        if self._legacy:
            n += sum(1 for _ in self.root.glob("*/*.json"))
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


def entry_text(entry: dict[str, Any]) -> str:
    """An entry as JSON text (orjson; json for what it refuses, e.g. a lone surrogate)."""
    try:
        return orjson.dumps(entry).decode()
    except orjson.JSONEncodeError:
        return json.dumps(entry, ensure_ascii=False)


def parse_entry(text: Any, key: str, where: str, required: Sequence[str]) -> dict[str, Any] | None:
    """The entry stored as ``text``, or None with a CacheWarning if it is not a usable one."""
    try:
        entry = json.loads(text)
    except (TypeError, ValueError) as exc:
        why = f"is not valid JSON ({exc})"
    else:
        missing = [f for f in required if f not in entry] if isinstance(entry, dict) else None
        if missing is None:
            why = f"is a JSON {type(entry).__name__}, not an object"
        elif missing:
            why = f"lacks the field(s) {', '.join(missing)}"
        else:
            return entry
    warn_user(f"cache entry {key} in {where} {why}: treated as a miss (the call is sent again and the entry replaced)",
              CacheWarning)
    return None


def open_cache(home: str | Path, url: str | None = None, *, required: Sequence[str] = ("content",)) -> Any:
    """The response cache of a data folder, or of a team's Redis (``url``: ``redis://...``)."""
    if url:
        from .redis_cache import RedisResponseCache

        return RedisResponseCache(url, required=required)
    return ResponseCache(home, required=required)


def clear_cache(home: str | Path, url: str | None = None) -> int:
    """Empty the response cache of ``home`` (or of the team's Redis at ``url``) -> how many answers went."""
    if not url:
        return ResponseCache.clear_folder(home)
    cache = open_cache(home, url)
    try:
        return int(cache.clear())
    finally:
        cache.close()


class _Damaged(StorageError):
    """The cache file is not a usable SQLite database (caught here: a miss, or a skipped store)."""


def _is_damaged(exc: sqlite3.Error) -> bool:
    """True for "file is not a database" and "database disk image is malformed" (and their codes)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).lower()
    return name in ("SQLITE_NOTADB", "SQLITE_CORRUPT") or "not a database" in text or "malformed" in text


def _why(exc: BaseException) -> str:
    """An OSError in words with its path, else its text."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return cause(exc, exc.filename)[1]
    return str(exc)
