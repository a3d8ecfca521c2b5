"""Ordered schema migrations, in the style of simonw/llm's ``llm/migrations.py``.

A :class:`Migrations` object is an ordered list of small functions, each taking a DuckDB
connection. ``apply`` runs the ones not yet recorded in the ``_migrations`` table, in the order
they were registered, each in its own transaction together with its ``_migrations`` row, so a
failing step leaves no trace and is retried next time. Several components can share one database:
names are recorded as ``"<namespace>:<function name>"``.

Never edit or reorder a migration that has shipped; add a new one at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..core.errors import InvalidRequestError, StorageError

if TYPE_CHECKING:
    import duckdb

__all__ = ["Migrations", "Migration", "LEDGER_MIGRATIONS"]

Migration = Callable[["duckdb.DuckDBPyConnection"], None]


class Migrations:
    """An ordered list of migrations for one component; use the object as a decorator."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.steps: list[tuple[str, Migration]] = []

    def __call__(self, fn: Migration) -> Migration:
        name = f"{self.namespace}:{fn.__name__}"
        if any(n == name for n, _ in self.steps):
            raise InvalidRequestError(f"duplicate migration {name}")
        self.steps.append((name, fn))
        return fn

    def applied(self, con: duckdb.DuckDBPyConnection) -> list[str]:
        """Names of this list's migrations already applied to ``con``'s database, in order."""
        _ensure_table(con)
        done = {r[0] for r in con.execute("SELECT name FROM _migrations").fetchall()}
        return [n for n, _ in self.steps if n in done]

    def apply(self, con: duckdb.DuckDBPyConnection) -> list[str]:
        """Apply pending migrations in order; return the names applied now."""
        done = set(self.applied(con))
        ran: list[str] = []
        for name, fn in self.steps:
            if name in done:
                continue
            con.begin()
            try:
                fn(con)
                con.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, now())", [name])
                con.commit()
            except Exception as e:
                con.rollback()
                raise StorageError(f"migration {name} failed: {e}") from e
            ran.append(name)
        return ran


def _ensure_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE TABLE IF NOT EXISTS _migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMPTZ)")


# --- the ledger ---------------------------------------------------------------------------
LEDGER_MIGRATIONS = Migrations("ledger")


@LEDGER_MIGRATIONS
def m001_llm_usage(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE llm_usage (
            row_id VARCHAR PRIMARY KEY,
            ts TIMESTAMPTZ,
            request_id VARCHAR,
            attempt INTEGER,
            kind VARCHAR,
            user_id VARCHAR,
            agent_id VARCHAR,
            task_id VARCHAR,
            role VARCHAR,
            provider VARCHAR,
            model VARCHAR,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            total_tokens INTEGER,
            cached_tokens INTEGER,
            cache_write_tokens INTEGER,
            tokens_estimated BOOLEAN,
            cost_usd DOUBLE,
            price_source VARCHAR,
            price_version VARCHAR,
            latency_ms DOUBLE,
            status VARCHAR,
            error_type VARCHAR,
            error_message VARCHAR,
            stream BOOLEAN,
            experiment_id VARCHAR,
            run_id VARCHAR
        )
        """
    )


@LEDGER_MIGRATIONS
def m002_response_cache(con: duckdb.DuckDBPyConnection) -> None:
    # Response-cache accounting came after the first schema: a hit costs nothing but saves money.
    con.execute("ALTER TABLE llm_usage ADD COLUMN cache_hit BOOLEAN")
    con.execute("ALTER TABLE llm_usage ADD COLUMN saved_cost_usd DOUBLE")


@LEDGER_MIGRATIONS
def m003_what_answered(con: duckdb.DuckDBPyConnection) -> None:
    # What was asked beside what answered (a substitute is never silent), what the provider said
    # answered, how many HTTP requests an attempt really sent (SDK retries included) and how many
    # of them may have been billed without an answer, and client set-up time kept out of latency.
    con.execute("ALTER TABLE llm_usage ADD COLUMN requested_provider VARCHAR")
    con.execute("ALTER TABLE llm_usage ADD COLUMN requested_model VARCHAR")
    con.execute("ALTER TABLE llm_usage ADD COLUMN substituted BOOLEAN")
    con.execute("ALTER TABLE llm_usage ADD COLUMN response_model VARCHAR")
    con.execute("ALTER TABLE llm_usage ADD COLUMN http_requests INTEGER")
    con.execute("ALTER TABLE llm_usage ADD COLUMN maybe_billed_requests INTEGER")
    con.execute("ALTER TABLE llm_usage ADD COLUMN setup_ms DOUBLE")


@LEDGER_MIGRATIONS
def m004_sampling(con: duckdb.DuckDBPyConnection) -> None:
    # Reasoning/thinking tokens (part of completion_tokens, priced as output) and the sampling
    # settings a fallback provider did not accept and was sent without.
    con.execute("ALTER TABLE llm_usage ADD COLUMN reasoning_tokens INTEGER")
    con.execute("ALTER TABLE llm_usage ADD COLUMN dropped_params VARCHAR")


@LEDGER_MIGRATIONS
def m005_prompt_cache_saving(con: duckdb.DuckDBPyConnection) -> None:
    # What reading the provider's prompt cache saved against full-price input (negative for a
    # write, which costs more than plain input at Anthropic).
    con.execute("ALTER TABLE llm_usage ADD COLUMN cache_saving_usd DOUBLE")


@LEDGER_MIGRATIONS
def m006_traces(con: duckdb.DuckDBPyConnection) -> None:
    # Calls that take several model turns (the tool loop, structured-output retries): each turn is
    # a row, and the rows of one call share a trace id. tool_calls: how many tools the turn asked for.
    con.execute("ALTER TABLE llm_usage ADD COLUMN trace_id VARCHAR")
    con.execute("ALTER TABLE llm_usage ADD COLUMN tool_calls INTEGER")


@LEDGER_MIGRATIONS
def m007_projects(con: duckdb.DuckDBPyConnection) -> None:
    # One data folder shared by notebooks, the demo and scripts: a row says which project (a name
    # the user chose) and which session (one Kit) made it, so views can show just those.
    con.execute("ALTER TABLE llm_usage ADD COLUMN project VARCHAR")
    con.execute("ALTER TABLE llm_usage ADD COLUMN session_id VARCHAR")


@LEDGER_MIGRATIONS
def m008_key_fingerprint(con: duckdb.DuckDBPyConnection) -> None:
    # Several API keys per provider: which one an attempt sent, as its fingerprint ("sha256:" and
    # 8 hex digits of the key's hash), never the key.
    con.execute("ALTER TABLE llm_usage ADD COLUMN key_fingerprint VARCHAR")


@LEDGER_MIGRATIONS
def m009_batch_id(con: duckdb.DuckDBPyConnection) -> None:
    # Requests sent through a provider's batch API (kit.run(exp, executor="batch")): which batch
    # answered the row, so views can tell batch-priced rows from live ones.
    con.execute("ALTER TABLE llm_usage ADD COLUMN batch_id VARCHAR")


@LEDGER_MIGRATIONS
def m010_memory(con: duckdb.DuckDBPyConnection) -> None:
    # Retrieval-augmented calls (kit.complete(..., memory=user_id, k=...)): whose memories went into
    # the prompt and which ones (a JSON list of memory ids, best first; "[]" when none was found).
    con.execute("ALTER TABLE llm_usage ADD COLUMN memory_user VARCHAR")
    con.execute("ALTER TABLE llm_usage ADD COLUMN memory_ids VARCHAR")


@LEDGER_MIGRATIONS
def m011_token_counter(con: duckdb.DuckDBPyConnection) -> None:
    # Estimated token counts (the provider reported none, e.g. a llama.cpp stream): what counted
    # them -- "tiktoken o200k_base" (an OpenAI model's own encoding), "cl100k_base estimate" (any
    # other model), "<endpoint> tokenizer" (the server's own). NULL when the provider reported them.
    con.execute("ALTER TABLE llm_usage ADD COLUMN token_counter VARCHAR")
