"""The ``llm_usage`` ledger: one row per attempt at one provider, in ``<home>/cognitionos.duckdb``.

``record`` only appends to this process's journal (microseconds, durable on return); ``usage``,
``spend`` and ``flush`` open DuckDB for a moment and ingest every process's journal first, so any
number of notebooks and scripts can share one data folder.

A data folder that cannot be written (read-only, full, permission denied) never costs a paid
answer: ``record`` keeps the rows (``pending``), spools them outside the data folder, warns once
(``StorageWarning``) and writes them at the next record or read that can. Ingested journals are
archived, so a damaged database can be rebuilt from them (``rebuild``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.display import UsageSummary
from ..core.errors import InvalidRequestError, StorageError, StorageWarning, warn_user
from ..core.validation import check_time
from .aggregates import summary_stats
from .faults import WRITE_FAULTS, reason_of
from .frames import tidy
from .migrations import LEDGER_MIGRATIONS
from .store import Store

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Ledger", "LEDGER_COLUMNS", "SPEND_KEYS"]

TABLE = "llm_usage"
LEDGER_COLUMNS: tuple[str, ...] = (
    "row_id", "ts", "request_id", "attempt", "kind", "user_id", "agent_id", "task_id", "role",
    "provider", "model", "prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens",
    "cache_write_tokens", "tokens_estimated", "cost_usd", "price_source", "price_version",
    "latency_ms", "status", "error_type", "error_message", "stream", "experiment_id", "run_id",
    "cache_hit", "saved_cost_usd", "requested_provider", "requested_model", "substituted", "response_model",
    "http_requests", "maybe_billed_requests", "setup_ms", "reasoning_tokens", "dropped_params",
    "cache_saving_usd", "trace_id", "tool_calls", "project", "session_id", "key_fingerprint",
    "batch_id", "memory_user", "memory_ids", "token_counter",
)  # fmt: skip
_COLUMNS = frozenset(LEDGER_COLUMNS)
_KEY_COLUMNS = ("user_id", "model", "provider", "role", "agent_id", "task_id", "experiment_id", "run_id", "kind",
                "trace_id", "project", "session_id")
SPEND_KEYS: dict[str, str] = {"day": "CAST(u.ts AS DATE)", **{k: f"u.{k}" for k in _KEY_COLUMNS}}
_MEASURES = frozenset({"row_id", "ts", "request_id", "prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens",
                       "cache_write_tokens", "cost_usd", "latency_ms", "saved_cost_usd", "http_requests",
                       "maybe_billed_requests", "setup_ms", "reasoning_tokens", "cache_saving_usd", "memory_ids"})
_GROUPABLE = {**SPEND_KEYS, **{k: f"u.{k}" for k in LEDGER_COLUMNS if k not in _MEASURES}}  # spend(by=...) keys


def utc_iso(value: Any, what: str) -> str:
    return check_time(value, what).isoformat()


def check_last(last: Any) -> int:
    """``last=`` (the newest N rows) checked: a positive whole number."""
    if not isinstance(last, int) or isinstance(last, bool) or last <= 0:
        raise InvalidRequestError(f"last must be a positive whole number of rows (or None for all), got {last!r}")
    return last


class Ledger:
    """Every LLM attempt the kit makes, shared by all processes using the same ``home`` folder."""

    def __init__(self, home: str | Path, *, lock_timeout: float = 30.0, fsync: bool = False) -> None:
        self.home = Path(home).expanduser()
        self.db_path = self.home / "cognitionos.duckdb"
        self.journal_dir = self.home / "journal"
        self.store = Store(
            self.db_path, self.journal_dir, LEDGER_MIGRATIONS, lock_timeout=lock_timeout, fsync=fsync,
            label="ledger database",
            rebuild_hint=f"kit.ledger.rebuild() or `python -m cognitionos_kit rebuild --home {self.home}`",
        )
        self._warned_episode = 0  # the store's fault episode this Ledger last warned about

    def __repr__(self) -> str:
        return f"Ledger({str(self.home)!r})"

    # --- writing ---------------------------------------------------------------------------
    def record(self, rows: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> None:
        """Append rows (dicts keyed by ``LEDGER_COLUMNS``; missing ones are NULL).

        Fills ``row_id`` and ``ts`` (now, UTC) when absent. All rows are validated before any is
        written (bad rows raise InvalidRequestError); once this returns they survive the process
        being killed. If the journal cannot be written, this does not raise: the rows are kept
        (see ``pending``) and spooled outside the data folder, with one StorageWarning per episode,
        and are written at the next record or read that can.
        """
        if isinstance(rows, Mapping):
            rows = [rows]
        out = []
        now: float | None = None
        for r in rows:
            if not isinstance(r, Mapping):
                raise InvalidRequestError(f"ledger rows must be dicts, got {type(r).__name__}")
            if not _COLUMNS.issuperset(r):
                bad = sorted(set(r) - _COLUMNS)
                raise InvalidRequestError(f"unknown ledger column(s) {bad}; valid columns: {', '.join(LEDGER_COLUMNS)}")
            row = {k: v for k, v in r.items() if v is not None}  # absent keys ingest as NULL: a shorter line
            if row.get("row_id") is None:
                row["row_id"] = os.urandom(16).hex()  # a uuid4 hex, without building a UUID object
            ts = row.get("ts")
            if ts is None:
                row["ts"] = now = now or time.time()
            elif not isinstance(ts, float):
                row["ts"] = utc_iso(ts, "ts")
            out.append(row)
        if not self.store.append(TABLE, out, keep=True):
            self._warn_kept()

    @property
    def pending(self) -> int:
        """How many recorded rows are not in the journal yet (kept while the data folder cannot be written)."""
        return self.store.pending

    def _warn_kept(self) -> None:
        store = self.store
        if store.episode == self._warned_episode:
            return
        self._warned_episode = store.episode
        cause = getattr(store.fault, "cause", None) or str(store.fault)
        warn_user(
            f"{cause}: the answer was returned and its ledger row kept in {store.kept_in}; it will be "
            "written to the ledger when the data folder is writable again",
            StorageWarning)

    # --- reading ---------------------------------------------------------------------------
    def usage(self, *, since: Any = None, until: Any = None, last: int | None = None, **filters: Any) -> pd.DataFrame:
        """All rows ordered by ``ts, attempt``; ``col=value`` filters (a list means any of),
        ``since`` (inclusive) and ``until`` (exclusive) bound ``ts``; ``last=N`` keeps the newest N
        of them (chosen in DuckDB: the other rows are never loaded)."""
        where, params = _where(filters, since, until)
        order = "u.ts, u.attempt, u.row_id"
        if last is None:
            return self.store.query_tidy(f"SELECT * FROM {TABLE} u{where} ORDER BY {order}", params)
        newest = f"SELECT * FROM {TABLE} u{where} ORDER BY u.ts DESC, u.attempt DESC, u.row_id DESC LIMIT {check_last(last)}"
        return self.store.query_tidy(f"SELECT * FROM ({newest}) u ORDER BY {order}", params)

    def spend(self, by: str | Sequence[str] = "user_id", *, since: Any = None, until: Any = None, **filters: Any) -> pd.DataFrame:
        """Spend grouped by ``by`` (a key or list of keys from ``SPEND_KEYS``, or another ledger column
        that is not a measure, such as ``status``), most expensive first.

        Columns: the keys, ``calls`` (status ok), ``attempts`` (all rows), ``cost_usd`` (NULL costs
        ignored; NULL if none is known), ``unpriced_calls`` (ok rows without a cost), token sums and
        ``latency_ms_p50/p95`` over ok calls. ``day`` is the UTC date. Filters as in :meth:`usage`.
        """
        keys = list(dict.fromkeys([by] if isinstance(by, str) else by))
        bad = [k for k in keys if k not in _GROUPABLE]
        if bad:
            raise InvalidRequestError(f"cannot group spend by {bad}; choose from {', '.join(SPEND_KEYS)} "
                                      "or another ledger column that is not a measure (status, batch_id, ...)")
        where, params = _where(filters, since, until)
        ok = "FILTER (WHERE u.status = 'ok')"
        select = [f"{_GROUPABLE[k]} AS {k}" for k in keys] + [
            f"count(*) {ok} AS calls",
            "count(*) AS attempts",
            "sum(u.cost_usd) AS cost_usd",
            "count(*) FILTER (WHERE u.status = 'ok' AND u.cost_usd IS NULL) AS unpriced_calls",
            "CAST(sum(u.prompt_tokens) AS BIGINT) AS prompt_tokens",
            "CAST(sum(u.completion_tokens) AS BIGINT) AS completion_tokens",
            "CAST(sum(coalesce(u.total_tokens, u.prompt_tokens + u.completion_tokens)) AS BIGINT) AS total_tokens",
            f"quantile_cont(u.latency_ms, 0.5) {ok} AS latency_ms_p50",
            f"quantile_cont(u.latency_ms, 0.95) {ok} AS latency_ms_p95",
        ]
        group = f" GROUP BY {', '.join(str(i + 1) for i in range(len(keys)))}" if keys else ""
        order = ", ".join([f"{len(keys) + 3} DESC NULLS LAST"] + [str(i + 1) for i in range(len(keys))])
        return tidy(self.store.query(f"SELECT {', '.join(select)} FROM {TABLE} u{where}{group} ORDER BY {order}", params))

    def summary(self, *, since: Any = None, until: Any = None, title: str = "Usage", **filters: Any) -> UsageSummary:
        """Calls, attempts, failures, spend and latency percentiles of the rows the filters select
        (as ``usage``), computed in DuckDB in one query: no row is loaded into Python."""
        where, params = _where(filters, since, until)
        totals, providers = summary_stats(self.store.query_many, where, params)
        return UsageSummary.from_totals(totals, providers, title=title)

    def spent_since(self, since: datetime | None, users: Sequence[str] | None = None) -> float:
        """Dollars spent since ``since`` (None: ever), by ``users`` (None: anyone)."""
        where, params = where_clause({"user_id": list(users)} if users is not None else {}, since, None, "u.")
        df = self.store.query(f"SELECT coalesce(sum(u.cost_usd), 0) AS usd FROM {TABLE} u{where}", params)
        return float(df["usd"].iloc[0])

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Any SQL over the database (``llm_usage`` and friends), with bound ``params``, after ingesting."""
        return self.store.query(sql, params)

    # --- lifecycle -------------------------------------------------------------------------
    def flush(self) -> int:
        """Ingest every process's pending rows into DuckDB now; return how many were added."""
        return self.store.flush()

    def rebuild(self) -> int:
        """Rebuild ``cognitionos.duckdb`` from the journals (archived and live); return its row count.

        The old file is kept as ``cognitionos.duckdb.corrupt-<UTC time>`` (``self.store.kept_as``)."""
        return self.store.rebuild()

    def close(self) -> None:
        """Flush; there is nothing else to close. A data folder that cannot be written is a
        StorageWarning here, not an error: the rows stay in the journals (or spooled) for later."""
        try:
            self.flush()
        except StorageError as e:
            if reason_of(e) not in WRITE_FAULTS:
                raise
            warn_user(f"the ledger could not be flushed on close: {e}", StorageWarning)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _where(filters: Mapping[str, Any], since: Any, until: Any) -> tuple[str, list[Any]]:
    """A WHERE clause with ``?`` placeholders, and its parameters."""
    bad = sorted(set(filters) - _COLUMNS)
    if bad:
        raise InvalidRequestError(f"unknown ledger column(s) {bad}; valid columns: {', '.join(LEDGER_COLUMNS)}")
    return where_clause(filters, since, until, "u.")


def where_clause(filters: Mapping[str, Any], since: Any, until: Any, prefix: str = "") -> tuple[str, list[Any]]:
    """``col=value`` filters (None: IS NULL; a list: any of) and a ``ts`` range as a WHERE clause
    with ``?`` placeholders, and its parameters (the columns already checked by the caller)."""
    clauses: list[str] = []
    params: list[Any] = []
    for col, value in filters.items():
        if value is None:
            clauses.append(f"{prefix}{col} IS NULL")
        elif isinstance(value, (list, tuple, set, frozenset)):
            values = list(value)
            clauses.append(f"{prefix}{col} IN ({', '.join('?' * len(values))})" if values else "FALSE")
            params.extend(values)
        else:
            clauses.append(f"{prefix}{col} = ?")
            params.append(value)
    if since is not None:
        clauses.append(f"{prefix}ts >= CAST(? AS TIMESTAMPTZ)")
        params.append(utc_iso(since, "since"))
    if until is not None:
        clauses.append(f"{prefix}ts < CAST(? AS TIMESTAMPTZ)")
        params.append(utc_iso(until, "until"))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params
