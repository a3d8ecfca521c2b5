"""Budgets kept in the data folder: ``<home>/guards/guards.sqlite``, shared by every process on it.

Why SQLite (Python's ``sqlite3``) and not the DuckDB ``Store``: a reservation must be one atomic
check-and-hold that every process on the folder sees at once, while all of them keep calling.
DuckDB lets one process open a file at a time; SQLite's ``BEGIN IMMEDIATE`` serialises writers
across processes for the few microseconds a reservation takes (as the response cache does).

Tables: ``budgets`` (scope, name, period -> limit), ``teams`` (team -> users), ``spent`` (settled
dollars per budget and window) and ``held`` (the worst cases of attempts in flight, with the
process that holds them, so a killed process's holds are released).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from ..core.errors import StorageError
from ..storage.sqlite import open_shared

__all__ = ["LocalGuards", "BudgetKey", "Refusal"]

_BUSY_TIMEOUT_S = 30.0
HOLD_S = 3600.0  # a hold outlives any attempt; a dead process's holds go at once (see _reap)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS budgets (scope TEXT, name TEXT, period TEXT, limit_usd REAL NOT NULL, set_at REAL,
                                    PRIMARY KEY (scope, name, period));
CREATE TABLE IF NOT EXISTS teams (team TEXT, user_id TEXT, PRIMARY KEY (team, user_id));
CREATE TABLE IF NOT EXISTS spent (scope TEXT, name TEXT, period TEXT, window TEXT, usd REAL NOT NULL,
                                  PRIMARY KEY (scope, name, period, window));
CREATE TABLE IF NOT EXISTS held (id TEXT, scope TEXT, name TEXT, period TEXT, window TEXT, usd REAL NOT NULL,
                                 pid INTEGER, host TEXT, expires REAL, PRIMARY KEY (id, scope, name, period));
"""
_HOST = os.uname().nodename if hasattr(os, "uname") else "host"


class BudgetKey(NamedTuple):
    scope: str  # "kit" | "user" | "team"
    name: str  # "" for the kit
    period: str  # "day" | "month" | "total"


class Refusal(NamedTuple):
    """The budget a reservation did not fit, and its numbers."""

    key: BudgetKey
    limit_usd: float
    spent_usd: float
    held_usd: float


class LocalGuards:
    """The budgets of one data folder; safe from several threads and processes."""

    def __init__(self, home: str | Path) -> None:
        self.root = Path(home) / "guards"
        self.path = self.root / "guards.sqlite"
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._seen_version: int | None = None
        self._any = False  # whether the folder has any budget (re-read when another connection writes)

    # --- connection ---------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                self._db = open_shared(self.path, _SCHEMA, _BUSY_TIMEOUT_S)
            except (OSError, sqlite3.Error) as exc:
                raise StorageError(f"cannot open the budgets file {self.path}: {exc}") from None
        return self._db

    def _write(self) -> _Txn:
        return _Txn(self)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # --- settings -------------------------------------------------------------------------------
    def set_budget(self, key: BudgetKey, limit_usd: float | None, window: str, already_spent: float) -> None:
        """Set (or, with None, remove) a budget; the current window starts from ``already_spent``."""
        with self._write() as db:
            if limit_usd is None:
                db.execute("DELETE FROM budgets WHERE scope=? AND name=? AND period=?", key)
                return
            db.execute("INSERT INTO budgets VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET limit_usd=excluded.limit_usd, "
                       "set_at=excluded.set_at", (*key, limit_usd, time.time()))
            db.execute("INSERT INTO spent VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", (*key, window, already_spent))

    def set_team(self, team: str, user_ids: Iterable[str]) -> None:
        with self._write() as db:
            db.execute("DELETE FROM teams WHERE team=?", (team,))
            db.executemany("INSERT INTO teams VALUES (?, ?)", [(team, u) for u in user_ids])

    def team_members(self, team: str) -> list[str]:
        with self._lock:
            return [r[0] for r in self._conn().execute("SELECT user_id FROM teams WHERE team=? ORDER BY user_id", (team,))]

    # --- calls ------------------------------------------------------------------------------------
    def any_budget(self) -> bool:
        """Whether the folder has a budget; cheap: re-read only after another connection wrote."""
        with self._lock:
            db = self._conn()
            version = db.execute("PRAGMA data_version").fetchone()[0]
            if version != self._seen_version:
                self._seen_version = version
                self._any = db.execute("SELECT 1 FROM budgets LIMIT 1").fetchone() is not None
            return self._any

    def reserve(self, hold_id: str, user_id: str | None, usd: float, windows: dict[str, str]) -> list[tuple] | Refusal:
        """Hold ``usd`` in every budget that applies to ``user_id`` (the kit's, the user's, their
        teams'), or hold nothing and return the first that it does not fit. -> the holds made."""
        now = time.time()
        with self._write() as db:
            keys = [BudgetKey(*r) for r in db.execute(
                "SELECT scope, name, period FROM budgets WHERE scope='kit' OR (scope='user' AND name=?) "
                "OR (scope='team' AND name IN (SELECT team FROM teams WHERE user_id=?)) ORDER BY scope, name, period",
                (user_id, user_id))]
            if not keys:
                return []
            for reaped in (False, True):
                refusal = self._first_refusal(db, keys, usd, windows, now)
                if refusal is None:
                    break
                if reaped or not self._reap(db):
                    return refusal
            holds = [(hold_id, *k, windows[k.period], usd, os.getpid(), _HOST, now + HOLD_S) for k in keys]
            db.executemany("INSERT INTO held VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", holds)
            return holds

    def _first_refusal(self, db: sqlite3.Connection, keys: list[BudgetKey], usd: float, windows: dict[str, str],
                       now: float) -> Refusal | None:
        for k in keys:
            w = windows[k.period]
            limit = db.execute("SELECT limit_usd FROM budgets WHERE scope=? AND name=? AND period=?", k).fetchone()[0]
            spent = db.execute("SELECT usd FROM spent WHERE scope=? AND name=? AND period=? AND window=?",
                               (*k, w)).fetchone()
            held = db.execute("SELECT coalesce(sum(usd), 0) FROM held WHERE scope=? AND name=? AND period=? "
                              "AND window=? AND expires > ?", (*k, w, now)).fetchone()[0]
            spent_usd = spent[0] if spent else 0.0
            if spent_usd + held + usd > limit * (1 + 1e-9):
                return Refusal(k, limit, spent_usd, held)
        return None

    def _reap(self, db: sqlite3.Connection) -> bool:
        """Drop holds that expired or whose process on this machine has exited; True if any went."""
        before = db.total_changes
        db.execute("DELETE FROM held WHERE expires <= ?", (time.time(),))
        for (pid,) in db.execute("SELECT DISTINCT pid FROM held WHERE host=?", (_HOST,)).fetchall():
            if pid != os.getpid() and not _alive(pid):
                db.execute("DELETE FROM held WHERE host=? AND pid=?", (_HOST, pid))
        return db.total_changes > before

    def settle(self, hold_id: str, holds: list[tuple], usd: float) -> None:
        """Release a reservation's holds and add the real cost to each budget's window."""
        with self._write() as db:
            db.execute("DELETE FROM held WHERE id=?", (hold_id,))
            if usd:
                db.executemany(
                    "INSERT INTO spent VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET usd = usd + excluded.usd",
                    [(h[1], h[2], h[3], h[4], usd) for h in holds])

    def rows(self, windows: dict[str, str]) -> list[dict[str, Any]]:
        """Every budget with its current window's spent and held dollars."""
        now = time.time()
        with self._lock:
            db = self._conn()
            out = []
            for scope, name, period, limit in db.execute(
                    "SELECT scope, name, period, limit_usd FROM budgets ORDER BY scope, name, period").fetchall():
                w = windows[period]
                spent = db.execute("SELECT usd FROM spent WHERE scope=? AND name=? AND period=? AND window=?",
                                   (scope, name, period, w)).fetchone()
                held = db.execute("SELECT coalesce(sum(usd), 0) FROM held WHERE scope=? AND name=? AND period=? "
                                  "AND window=? AND expires > ?", (scope, name, period, w, now)).fetchone()[0]
                out.append({"scope": scope, "name": name, "period": period, "window": w, "limit_usd": limit,
                            "spent_usd": spent[0] if spent else 0.0, "reserved_usd": held})
            return out


class _Txn:
    """``with store._write() as db``: one ``BEGIN IMMEDIATE`` transaction (the cross-process lock)."""

    def __init__(self, store: LocalGuards) -> None:
        self.store = store

    def __enter__(self) -> sqlite3.Connection:
        self.store._lock.acquire()
        try:
            db = self.store._conn()
            db.execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            self.store._lock.release()
            if isinstance(exc, sqlite3.Error):
                raise StorageError(f"cannot write the budgets file {self.store.path}: {exc}") from None
            raise
        return db

    def __exit__(self, typ: Any, exc: Any, tb: Any) -> None:
        db = self.store._db
        try:
            if db is not None:
                db.execute("ROLLBACK" if typ is not None else "COMMIT")
        finally:
            self.store._lock.release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
