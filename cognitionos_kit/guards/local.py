"""Budgets kept in the data folder: ``<home>/guards/guards.sqlite``, shared by every process on it.

Why SQLite (Python's ``sqlite3``) and not the DuckDB ``Store``: a reservation must be one atomic
check-and-hold that every process on the folder sees at once, while all of them keep calling.
DuckDB lets one process open a file at a time; SQLite's ``BEGIN IMMEDIATE`` serialises writers
across processes for the few microseconds a reservation takes (as the response cache does).

Tables: ``budgets`` (scope, name, period -> limit), ``teams`` (team -> users) and ``tallies`` (per
budget window and process: the dollars it settled and the worst cases its attempts in flight
hold, so what a killed process held is released and what it spent stays).
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

__all__ = ["LocalGuards", "BudgetKey", "Refusal", "HOST", "alive", "pause_row"]

_BUSY_TIMEOUT_S = 30.0
RECHECK_S = 0.05  # another process's new budget, limit or pause binds this one's calls within this
HOLD_S = 3600.0  # a hold outlives any attempt; a dead process's holds go at once (see _reap)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS budgets (scope TEXT, name TEXT, period TEXT, limit_usd REAL NOT NULL, set_at REAL,
                                    PRIMARY KEY (scope, name, period));
CREATE TABLE IF NOT EXISTS teams (team TEXT, user_id TEXT, PRIMARY KEY (team, user_id));
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('version', 0);
CREATE TABLE IF NOT EXISTS rate_limits (key TEXT PRIMARY KEY, user_id TEXT, provider TEXT, model TEXT,
                                        rpm REAL, tpm REAL, policy TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rate_state (key TEXT, kind TEXT, tat REAL NOT NULL, PRIMARY KEY (key, kind));
CREATE TABLE IF NOT EXISTS pauses (provider TEXT PRIMARY KEY, until REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tallies (scope TEXT, name TEXT, period TEXT, window TEXT, host TEXT, pid INTEGER,
                                    spent REAL NOT NULL, held REAL NOT NULL, touched REAL,
                                    PRIMARY KEY (scope, name, period, window, host, pid));
"""
# The budgets that apply to a user (?1): the folder's, the user's and their teams'. Cached per
# process until set_budget or set_team (anywhere) bumps meta.version.
_APPLIES = """
SELECT scope, name, period, limit_usd FROM budgets
WHERE scope = 'kit' OR (scope = 'user' AND name = ?1) OR (scope = 'team' AND name IN (SELECT team FROM teams WHERE user_id = ?1))
ORDER BY scope, name, period
"""
_BUMP = "UPDATE meta SET v = v + 1 WHERE k = 'version'"  # a budget, team or limit changed: see _config_write
# A process keeps one tally row per budget window: what it spent there and what it holds now.
_HOLD = ("INSERT INTO tallies VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?) "
         "ON CONFLICT DO UPDATE SET held = held + excluded.held, touched = excluded.touched")
# a hold settled to within 1e-12 of nothing is nothing (float residue must not show as "reserved")
_SETTLE = ("UPDATE tallies SET held = CASE WHEN held - ?1 < 1e-12 THEN 0 ELSE held - ?1 END, spent = spent + ?2 "
           "WHERE scope = ?3 AND name = ?4 AND period = ?5 AND window = ?6 AND host = ?7 AND pid = ?8")
HOST = os.uname().nodename if hasattr(os, "uname") else "host"


def pause_row(name: str) -> tuple:
    """A provider's pause (a 429's Retry-After) in the shape of a rate-limit row: no key, policy wait."""
    return ("", None, name, None, None, None, "wait")


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

    backend = "local"

    def __init__(self, home: str | Path) -> None:
        self.root = Path(home) / "guards"
        self.path = self.root / "guards.sqlite"
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._seen_version: int | None = None
        self._version = -1  # meta.version the cached _applies were read at
        self._applies: dict[str | None, list[tuple]] = {}
        self._limits_version = -1
        self._limit_rows: list[tuple] = []
        self._paused = False  # whether any provider is paused (re-read with the limits)
        self._any = False  # whether the folder has any budget (re-read when another connection writes)
        self._has_limits = False
        self._checked = 0.0  # time.monotonic() of the last look at PRAGMA data_version
        self._absent_at = -1.0  # time.monotonic() when the file was last found absent
        self.config_version: int | None = None  # meta.version: moves when a budget, team or limit changes
        self.last_left = 0.0  # what the tightest budget had left after the last reservation

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

    def _config_write(self, db: sqlite3.Connection) -> None:
        """Note a change of budgets, teams or limits: other processes see meta.version move; this
        one re-reads at once (PRAGMA data_version moves only for other connections' commits)."""
        db.execute(_BUMP)
        self._seen_version = None

    def exists(self) -> bool:
        """Whether the file exists (none yet: no budget, no limit, and nothing is created). Looked
        for at most every ``RECHECK_S`` while absent: another process's first budget binds within it."""
        if self._db is not None:
            return True
        now = time.monotonic()
        if now - self._absent_at < RECHECK_S:
            return False
        if self.path.exists():
            return True
        self._absent_at = now
        return False

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # --- settings -------------------------------------------------------------------------------
    def set_budget(self, key: BudgetKey, limit_usd: float | None, window: str, already_spent: float) -> None:
        """Set (or, with None, remove) a budget; the current window starts from ``already_spent``."""
        with self._write() as db:
            self._config_write(db)
            if limit_usd is None:
                db.execute("DELETE FROM budgets WHERE scope=? AND name=? AND period=?", key)
                return
            db.execute("INSERT INTO budgets VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET limit_usd=excluded.limit_usd, "
                       "set_at=excluded.set_at", (*key, limit_usd, time.time()))
            # the ledger is the truth: the window starts from what its users spent so far (one
            # row stands for it; the holds of calls in flight stay with their processes)
            db.execute("UPDATE tallies SET spent = 0 WHERE scope=? AND name=? AND period=? AND window=?", (*key, window))
            db.execute("INSERT INTO tallies VALUES (?, ?, ?, ?, '', 0, ?, 0, ?) ON CONFLICT DO UPDATE SET spent = "
                       "excluded.spent", (*key, window, already_spent, time.time()))

    def set_team(self, team: str, user_ids: Iterable[str]) -> None:
        with self._write() as db:
            self._config_write(db)
            db.execute("DELETE FROM teams WHERE team=?", (team,))
            db.executemany("INSERT INTO teams VALUES (?, ?)", [(team, u) for u in user_ids])

    def team_members(self, team: str) -> list[str]:
        with self._lock:
            return [r[0] for r in self._conn().execute("SELECT user_id FROM teams WHERE team=? ORDER BY user_id", (team,))]

    # --- calls ------------------------------------------------------------------------------------
    def any_budget(self) -> bool:
        """Whether the folder has a budget, a rate limit or a paused provider; cheap: asks whether
        another connection wrote at most every ``RECHECK_S`` (this one's own writes count at once),
        and re-reads only then (``config_version`` and ``has_limits`` with it)."""
        now = time.monotonic()
        if self._seen_version is not None and now - self._checked < RECHECK_S:
            return self._any
        with self._lock:
            self._checked = now
            db = self._conn()
            version = db.execute("PRAGMA data_version").fetchone()[0]
            if version != self._seen_version:
                self._seen_version = version
                self.config_version, budgets, self._has_limits = db.execute(
                    "SELECT (SELECT v FROM meta WHERE k = 'version'), EXISTS (SELECT 1 FROM budgets), "
                    "EXISTS (SELECT 1 FROM rate_limits) OR EXISTS (SELECT 1 FROM pauses)").fetchone()
                self._any = bool(budgets or self._has_limits)
            return self._any

    def has_limits(self) -> bool:
        """Whether a rate limit or a provider's pause exists (as of the last ``any_budget``)."""
        return bool(self._has_limits)

    def reserve(self, user_id: str | None, usd: float, windows: dict[str, str],
                extra: Iterable[tuple[BudgetKey, float]] = (), *, only_extra: bool = False) -> list[tuple] | Refusal:
        """Hold ``usd`` in every budget that applies to ``user_id`` (the kit's, the user's, their
        teams'; none with ``only_extra``) and in ``extra`` (total budgets the caller keeps: an
        experiment run's), or hold nothing and return the first that it does not fit. -> the windows held."""
        with self._write() as db:
            budgets = ([] if only_extra else self._applying(db, user_id)) + [(*k, limit) for k, limit in extra]
            if not budgets:
                return []
            keys = [(scope, name, period, windows[period]) for scope, name, period, _ in budgets]
            for reaped in (False, True):
                tally = self._tally(db, keys)
                refusal = next((Refusal(BudgetKey(*b[:3]), b[3], *tally.get(k, (0.0, 0.0)))
                                for b, k in zip(budgets, keys) if sum(tally.get(k, (0.0, 0.0))) + usd > b[3] * (1 + 1e-9)),
                               None)
                if refusal is None:
                    self.last_left = min(b[3] - sum(tally.get(k, (0.0, 0.0))) - usd for b, k in zip(budgets, keys))
                    break
                if reaped or not self._reap(db):
                    return refusal
            mine = [(*k, HOST, os.getpid()) for k in keys]
            now = time.time()
            db.executemany(_HOLD, [(*k, usd, now) for k in mine])
            return mine

    def applies(self, user_id: str | None) -> bool:
        """Whether any budget applies to ``user_id``."""
        with self._lock:
            return bool(self._applying(self._conn(), user_id))

    def _applying(self, db: sqlite3.Connection, user_id: str | None) -> list[tuple]:
        version = db.execute("SELECT v FROM meta WHERE k = 'version'").fetchone()[0]
        if version != self._version:
            self._version, self._applies = version, {}
        got = self._applies.get(user_id)
        if got is None:
            got = self._applies[user_id] = db.execute(_APPLIES, (user_id,)).fetchall()
        return got

    @staticmethod
    def _tally(db: sqlite3.Connection, keys: list[tuple]) -> dict[tuple, tuple[float, float]]:
        """(spent, held) of each budget window, summed over the processes."""
        rows = db.execute(
            "SELECT scope, name, period, window, sum(spent), sum(held) FROM tallies WHERE (scope, name, period, window) "
            f"IN (VALUES {', '.join(['(?, ?, ?, ?)'] * len(keys))}) GROUP BY 1, 2, 3, 4",
            [v for k in keys for v in k]).fetchall()
        return {tuple(r[:4]): (r[4], r[5]) for r in rows}

    def _reap(self, db: sqlite3.Connection) -> bool:
        """Release what processes on this machine that have exited still hold, and holds untouched
        for ``HOLD_S``; True if any went."""
        stale = time.time() - HOLD_S
        before = db.total_changes
        for host, pid, touched in db.execute("SELECT DISTINCT host, pid, touched FROM tallies WHERE held > 0").fetchall():
            if touched < stale or (host == HOST and pid != os.getpid() and not alive(pid)):
                db.execute("UPDATE tallies SET held = 0 WHERE host = ? AND pid = ? AND held > 0", (host, pid))
        return db.total_changes > before

    def settle(self, keys: list[tuple], held_usd: float, usd: float) -> None:
        """Release a reservation's holds and add the real cost to each budget's window."""
        with self._write() as db:
            db.executemany(_SETTLE, [(held_usd, usd, *k) for k in keys])

    # --- rate limits ------------------------------------------------------------------------------
    def set_rate_limit(self, key: str, scope: tuple[str | None, str | None, str | None], rpm: float | None,
                       tpm: float | None, policy: str) -> None:
        with self._write() as db:
            self._config_write(db)
            db.execute("DELETE FROM rate_state WHERE key = ?", (key,))
            if rpm is None and tpm is None:
                db.execute("DELETE FROM rate_limits WHERE key = ?", (key,))
                return
            db.execute("INSERT OR REPLACE INTO rate_limits VALUES (?, ?, ?, ?, ?, ?, ?)", (key, *scope, rpm, tpm, policy))

    def admit(self, user_id: str | None, provider: str, model: str, tokens: int,
              paused_as: tuple[str, ...] = (), max_pause: float | None = None) -> tuple[float, list[tuple]]:
        """Book the next slot of every rate limit that applies (a generic cell rate algorithm
        without bursts: requests, and tokens, evenly spaced at the limit's pace) -> (seconds to
        wait before sending, the limits that made it wait). A limit with policy "raise" that
        would make the call wait books nothing: the caller raises; nor does a provider's pause
        longer than ``max_pause`` (the caller moves on without sending)."""
        with self._write() as db:
            limits = self._limits(db)
            mine = [lim for lim in limits if (lim[1] is None or lim[1] == user_id) and (lim[2] is None or lim[2] == provider)
                    and (lim[3] is None or lim[3] == model)]
            now = time.time()
            names = paused_as or (provider,)
            paused = db.execute(f"SELECT provider, until FROM pauses WHERE provider IN ({', '.join('?' * len(names))}) "
                                "AND until > ? ORDER BY until DESC LIMIT 1", (*names, now)).fetchone() \
                if self._paused else None
            # a pause that ended goes, so calls with no limit skip the file again
            if paused is None and self._paused and db.execute("DELETE FROM pauses WHERE until <= ?", (now,)).rowcount:
                self._config_write(db)
            if not mine and paused is None:
                return 0.0, []
            costs = [(lim, kind, 60.0 / rate * n) for lim in mine
                     for kind, rate, n in (("req", lim[4], 1), ("tok", lim[5], tokens)) if rate]
            tats = {(lim[0], kind): db.execute("SELECT tat FROM rate_state WHERE key = ? AND kind = ?",
                                               (lim[0], kind)).fetchone() for lim, kind, _ in costs}
            start = max([now] + [t[0] for t in tats.values() if t is not None] + ([paused[1]] if paused else []))
            waiting = [lim for lim, kind, _ in costs if (tats[(lim[0], kind)] or (0.0,))[0] > now]
            if paused is not None:
                waiting.append(pause_row(paused[0]))  # its 429 said Retry-After
                if max_pause is not None and paused[1] - now > max_pause:
                    return paused[1] - now, waiting  # longer than the caller waits: nothing booked
            if start > now and any(lim[6] == "raise" for lim in waiting):
                return start - now, waiting
            db.executemany("INSERT OR REPLACE INTO rate_state VALUES (?, ?, ?)",
                           [(lim[0], kind, start + step) for lim, kind, step in costs])
            return start - now, waiting

    def _limits(self, db: sqlite3.Connection) -> list[tuple]:
        version = db.execute("SELECT v FROM meta WHERE k = 'version'").fetchone()[0]
        if version != self._limits_version:
            self._limits_version = version
            self._limit_rows = db.execute("SELECT * FROM rate_limits ORDER BY key").fetchall()
            self._paused = db.execute("SELECT 1 FROM pauses LIMIT 1").fetchone() is not None
        return self._limit_rows

    def pause(self, provider: str, seconds: float) -> None:
        """Hold every call to ``provider`` (``openai``, or ``openai#<key fingerprint>``) for ``seconds``
        (its 429 said Retry-After), in every process."""
        with self._write() as db:
            self._config_write(db)
            db.execute("DELETE FROM pauses WHERE until < ?", (time.time(),))
            db.execute("INSERT OR REPLACE INTO pauses VALUES (?, ?)", (provider, time.time() + seconds))

    def limit_rows(self) -> list[tuple]:
        with self._lock:
            return self._conn().execute("SELECT key, user_id, provider, model, rpm, tpm, policy FROM rate_limits "
                                        "ORDER BY key").fetchall()

    def tally(self, key: BudgetKey, window: str) -> tuple[float, float]:
        """(spent, held) of one budget window, over every process."""
        with self._lock:
            got = self._tally(self._conn(), [(*key, window)])
        return got.get((*key, window), (0.0, 0.0))

    def rows(self, windows: dict[str, str]) -> list[dict[str, Any]]:
        """Every budget with its current window's spent and held dollars."""
        with self._lock:
            db = self._conn()
            out = []
            for scope, name, period, limit in db.execute(
                    "SELECT scope, name, period, limit_usd FROM budgets ORDER BY scope, name, period").fetchall():
                w = windows[period]
                got = db.execute("SELECT coalesce(sum(spent), 0), coalesce(sum(held), 0) FROM tallies WHERE scope=? "
                                 "AND name=? AND period=? AND window=?", (scope, name, period, w)).fetchone()
                out.append({"scope": scope, "name": name, "period": period, "window": w, "limit_usd": limit,
                            "spent_usd": got[0], "reserved_usd": got[1]})
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


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
