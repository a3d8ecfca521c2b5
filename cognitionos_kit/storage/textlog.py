"""The text log: what each request asked and what came back, kept beside the ledger.

The ledger (``llm_usage``) holds numbers; the text log (``llm_log`` in its own database file,
``<home>/cognitionos_log.duckdb``, fed by its own journals) holds the messages, the system prompt,
the parameters, the answer, the tool calls and each attempt's error text, linked by
``request_id``. Keeping it in a second file keeps accounting queries as fast as before however
much text piles up, and lets a user delete the text without touching the spend.

One row per attempt (like the ledger); the request's messages are stored with its first recorded
attempt only. ``TextLog.entries`` gives one row per request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import InvalidRequestError, StorageError, StorageWarning, warn_user
from .frames import tidy
from .ledger import where_clause
from .migrations import Migrations
from .store import Store

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["TextLog", "LOG_COLUMNS", "LOG_MIGRATIONS"]

TABLE = "llm_log"
LOG_COLUMNS: tuple[str, ...] = (
    "row_id", "ts", "request_id", "attempt", "trace_id", "kind", "user_id", "role", "experiment_id", "run_id",
    "provider", "model", "status", "prompt", "system", "messages", "params", "answer", "tool_calls", "error",
    "cost_usd", "latency_ms", "prompt_tokens", "completion_tokens", "project", "session_id",
)  # fmt: skip
_COLUMNS = frozenset(LOG_COLUMNS)
# what entries() may filter on with col=value (like kit.usage)
FILTERS = ("request_id", "trace_id", "user_id", "role", "provider", "model", "status", "experiment_id", "run_id", "kind",
           "project", "session_id")

LOG_MIGRATIONS = Migrations("log")


@LOG_MIGRATIONS
def m001_llm_log(con: Any) -> None:
    con.execute(
        """
        CREATE TABLE llm_log (
            row_id VARCHAR PRIMARY KEY,
            ts TIMESTAMPTZ,
            request_id VARCHAR,
            attempt INTEGER,
            trace_id VARCHAR,
            kind VARCHAR,
            user_id VARCHAR,
            role VARCHAR,
            experiment_id VARCHAR,
            run_id VARCHAR,
            provider VARCHAR,
            model VARCHAR,
            status VARCHAR,
            prompt VARCHAR,
            system VARCHAR,
            messages VARCHAR,
            params VARCHAR,
            answer VARCHAR,
            tool_calls VARCHAR,
            error VARCHAR,
            cost_usd DOUBLE,
            latency_ms DOUBLE,
            prompt_tokens INTEGER,
            completion_tokens INTEGER
        )
        """
    )


@LOG_MIGRATIONS
def m002_projects(con: Any) -> None:
    # as the ledger's m007: the project and session that made the row
    con.execute("ALTER TABLE llm_log ADD COLUMN project VARCHAR")
    con.execute("ALTER TABLE llm_log ADD COLUMN session_id VARCHAR")


class TextLog:
    """Prompts and answers of every request under one data folder (all processes)."""

    def __init__(self, home: str | Path, *, lock_timeout: float = 30.0) -> None:
        self.home = Path(home).expanduser()
        self.db_path = self.home / "cognitionos_log.duckdb"
        self.store = Store(self.db_path, self.home / "log_journal", LOG_MIGRATIONS, lock_timeout=lock_timeout,
                           label="text log database",
                           rebuild_hint=f"delete {self.db_path} to start a new text log (the ledger is not affected)")
        self._warned_episode = 0

    def __repr__(self) -> str:
        return f"TextLog({str(self.home)!r})"

    def record(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append rows (keys from ``LOG_COLUMNS``). A data folder that cannot be written keeps
        them for later (one ``StorageWarning``), as the ledger does."""
        import os
        import time

        out = []
        for r in rows:
            bad = set(r) - _COLUMNS
            if bad:
                raise InvalidRequestError(f"unknown text log column(s) {sorted(bad)}")
            row = {k: v for k, v in r.items() if v is not None}
            row.setdefault("row_id", os.urandom(16).hex())
            row.setdefault("ts", time.time())
            out.append(row)
        if not self.store.append(TABLE, out, keep=True) and self.store.episode != self._warned_episode:
            self._warned_episode = self.store.episode
            warn_user(f"{self.store.fault}: the text log rows are kept in {self.store.kept_in} until the data folder "
                      "is writable again", StorageWarning)

    def entries(self, search: str | None = None, *, since: Any = None, until: Any = None, limit: int | None = None,
                **filters: Any) -> pd.DataFrame:
        """One row per request, newest first: its prompt, answer, system prompt, messages and
        parameters (JSON), who answered, status, every attempt's error, cost (all attempts),
        latency and tokens. ``search`` finds text in the prompt, messages, system prompt, answer
        or errors (case-insensitive); ``col=value`` filters as ``kit.usage`` (a list: any of)."""
        bad = sorted(set(filters) - set(FILTERS))
        if bad:
            raise InvalidRequestError(f"kit.log cannot filter on {bad}; use search= for text, or one of {', '.join(FILTERS)}")
        where, params = where_clause(filters, since, until)
        having = ""
        if search is not None:
            if not isinstance(search, str) or not search.strip():
                raise InvalidRequestError("search must be some text to look for")
            having = (" HAVING bool_or(coalesce(prompt, '') || ' ' || coalesce(messages, '') || ' ' || "
                      "coalesce(system, '') || ' ' || coalesce(answer, '') || ' ' || coalesce(error, '') ILIKE ?)")
            params.append("%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        top = ""
        if limit is not None:
            if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
                raise InvalidRequestError(f"limit must be a positive whole number, got {limit!r}")
            top = f" LIMIT {limit}"
        sql = f"""
            SELECT min(ts) AS ts, request_id, any_value(trace_id) AS trace_id, any_value(user_id) AS user_id,
                   any_value(role) AS role, arg_max(provider, attempt) AS provider, arg_max(model, attempt) AS model,
                   arg_max(status, attempt) AS status, arg_min(prompt, attempt) AS prompt,
                   arg_max(answer, attempt) AS answer, arg_max(tool_calls, attempt) AS tool_calls,
                   sum(cost_usd) AS cost_usd, arg_max(latency_ms, attempt) AS latency_ms,
                   arg_max(prompt_tokens, attempt) AS prompt_tokens,
                   arg_max(completion_tokens, attempt) AS completion_tokens, count(*) AS attempts,
                   string_agg(error, ' | ' ORDER BY attempt) AS errors,
                   arg_min(system, attempt) AS system, arg_min(messages, attempt) AS messages,
                   arg_min(params, attempt) AS params, any_value(experiment_id) AS experiment_id,
                   any_value(run_id) AS run_id
            FROM {TABLE}{where}
            GROUP BY request_id{having}
            ORDER BY ts DESC, request_id{top}
        """
        return tidy(self.store.query(sql, params))

    def flush(self) -> int:
        return self.store.flush()

    def close(self) -> None:
        try:
            self.flush()
        except StorageError as e:  # like the ledger: a folder that cannot be written keeps the rows for later
            warn_user(f"the text log could not be flushed on close: {e}", StorageWarning)
