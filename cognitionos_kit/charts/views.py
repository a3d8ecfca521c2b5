"""``kit.charts``: the ledger read with filters, then drawn by ``figures``: the aggregate charts from
sums and histograms computed in DuckDB over every matching row, the per-call scatters from the
newest ``DEFAULT_LAST`` attempts (``last=``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..core.config import view_filters
from ..core.errors import InvalidRequestError
from ..storage.aggregates import Aggregates, Runner, cache_savings, frame_runner, latency_groups, spend_lines
from ..storage.ledger import LEDGER_COLUMNS, check_last, where_clause
from .figures import (
    DEFAULT_LAST,
    FILTERS,
    ChartFilters,
    Match,
    Time,
    cache_bars,
    latency_figure,
    latency_over_time,
    spend_bars,
    spend_figure,
    tokens_vs_latency,
)

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go
    from typing_extensions import Unpack

    from ..kit import Kit  # an annotation only: charts sit below the Kit facade

__all__ = ["Charts", "read_aggregates", "clean_filters", "describe_filters"]


def describe_filters(filters: Mapping[str, Any]) -> str:
    """' · user alice · since 2026-01-02 10:00' for a title (empty when unfiltered)."""
    parts = []
    for k, v in filters.items():
        if isinstance(v, datetime):
            v = v.isoformat(sep=" ", timespec="minutes")
        elif isinstance(v, (list, tuple, set, frozenset)):
            v = "|".join(map(str, v))
        parts.append(f"{k.removesuffix('_id')} {v}")
    return "".join(f" · {p}" for p in parts)


def clean_filters(filters: Mapping[str, Any]) -> dict[str, Any]:
    """Known filters with a value (None means 'any'); an unknown name is an InvalidRequestError."""
    bad = sorted(set(filters) - set(FILTERS))
    if bad:
        raise InvalidRequestError(f"unknown filter(s) {bad}: use {', '.join(FILTERS)}")
    return {k: v for k, v in filters.items() if v is not None}


def read_aggregates(kit: Kit, filters: Mapping[str, Any], agg: Aggregates | None = None) -> Aggregates:
    """The running aggregates (``storage.aggregates``) of the rows ``filters`` and the Kit's views
    select, brought up to date: a local Kit's ledger read incrementally (``agg`` from the last
    call, or None to start); a client Kit's rows, from its server, folded afresh."""
    if hasattr(kit, "newest_row"):  # a client Kit (client/served.py): no ledger file here
        fresh = Aggregates()
        frame = kit.usage(**filters)
        if len(frame):
            fresh.update(frame_runner(frame))
        return fresh
    if agg is None:
        agg = Aggregates(*_where(kit, filters))
    agg.update(kit.ledger.store.query_many)
    return agg


def _where(kit: Kit, filters: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """The WHERE clause (and parameters) of ``filters`` and a local Kit's views, on ``llm_usage u``."""
    f = {**view_filters(kit.config, kit.session_id), **filters}
    since, until = f.pop("since", None), f.pop("until", None)
    return where_clause(f, since, until, "u.")


class Charts:
    """Plotly figures of a Kit's ledger: ``kit.charts.latency(user_id="alice")``.

    Every method takes the same keyword filters (``FILTERS``); None means any, a list any of its
    values: ``user_id``, ``since`` (inclusive) and ``until`` (exclusive, a datetime, date, ISO
    string or epoch seconds), ``experiment_id``, ``provider``, ``model``, ``run_id``, ``kind``.
    """

    def __init__(self, kit: Kit) -> None:
        self.kit = kit

    def __repr__(self) -> str:
        return f"Charts({self.kit!r}): latency, latency_over_time, spend_over_time, spend_by, tokens_vs_latency"

    def _read(self, filters: Mapping[str, Any], last: int | None) -> tuple[pd.DataFrame, str]:
        """The newest ``last`` rows (None: all) the filters select, and the title's note."""
        f = clean_filters(filters)
        df = self.kit.usage(**f) if last is None else self.kit.usage(**f, last=check_last(last))
        window = f" · newest {last:,} attempts (last=None: all)" if last is not None and len(df) >= last else ""
        return df, describe_filters(f) + window

    def _sql(self, filters: Mapping[str, Any]) -> tuple[Runner, str, list[Any]]:
        """A runner of ledger SQL and the WHERE clause of ``filters`` with the Kit's views: the
        ledger's DuckDB for a local Kit; for a client Kit, its server's rows in an in-memory table."""
        if hasattr(self.kit, "newest_row"):  # a client Kit (client/served.py): no ledger file here
            return frame_runner(self.kit.usage(**filters)), "", []
        return (self.kit.ledger.store.query_many, *_where(self.kit, filters))

    def data(
        self, *, user_id: Match = None, since: Time = None, until: Time = None, experiment_id: Match = None,
        provider: Match = None, model: Match = None, run_id: Match = None, kind: Match = None,
        last: int | None = DEFAULT_LAST,
    ) -> pd.DataFrame:
        """The ledger rows the per-call charts draw, for these filters: the newest ``last`` (None: all)."""
        return self._read(dict(user_id=user_id, since=since, until=until, experiment_id=experiment_id,
                               provider=provider, model=model, run_id=run_id, kind=kind), last)[0]

    def latency(
        self, *, user_id: Match = None, since: Time = None, until: Time = None, experiment_id: Match = None,
        provider: Match = None, model: Match = None, run_id: Match = None, kind: Match = None,
    ) -> go.Figure:
        """Latency distribution per provider/model with p50/p95/p99 marked (successful attempts).
        Read as aggregates in DuckDB: past 300 calls a model's box and marks come from a latency
        histogram (within 0.5%) and only its newest 300 calls are drawn as points."""
        f = clean_filters(dict(user_id=user_id, since=since, until=until, experiment_id=experiment_id,
                               provider=provider, model=model, run_id=run_id, kind=kind))
        return latency_figure(latency_groups(read_aggregates(self.kit, f)), note=describe_filters(f))

    def latency_over_time(
        self, *, user_id: Match = None, since: Time = None, until: Time = None, experiment_id: Match = None,
        provider: Match = None, model: Match = None, run_id: Match = None, kind: Match = None,
        last: int | None = DEFAULT_LAST,
    ) -> go.Figure:
        """Each attempt's latency against time; failures in red. Draws the newest ``last`` attempts
        (default ``DEFAULT_LAST``, 5,000; the title says so when more exist; ``last=None``: all)."""
        df, note = self._read(dict(user_id=user_id, since=since, until=until, experiment_id=experiment_id,
                                   provider=provider, model=model, run_id=run_id, kind=kind), last)
        return latency_over_time(df, note=note)

    def spend_over_time(
        self, *, user_id: Match = None, since: Time = None, until: Time = None, experiment_id: Match = None,
        provider: Match = None, model: Match = None, run_id: Match = None, kind: Match = None,
    ) -> go.Figure:
        """Cumulative spend, total and per provider (summed per minute in DuckDB: at most 1000 steps)."""
        f = clean_filters(dict(user_id=user_id, since=since, until=until, experiment_id=experiment_id,
                               provider=provider, model=model, run_id=run_id, kind=kind))
        agg = read_aggregates(self.kit, f)
        total, lines = spend_lines(agg)
        return spend_figure(total, lines, unpriced=int(agg.total("unpriced")), rows=int(agg.total("attempts")),
                            note=describe_filters(f))

    def prompt_cache(self, **filters: Unpack[ChartFilters]) -> go.Figure:
        """What prompt caching saved per model (``cache_prompt=`` calls, and OpenAI's own caching),
        summed in DuckDB over all the rows the filters select."""
        f = clean_filters(filters)
        run, where, params = self._sql(f)
        totals = cache_savings(run, where, params)
        return cache_bars(totals, note=describe_filters(f), rows=len(totals) or int(self.kit.summary(**f).attempts))

    def spend_by(
        self, by: str = "user_id", *, user_id: Match = None, since: Time = None, until: Time = None,
        experiment_id: Match = None, provider: Match = None, model: Match = None, run_id: Match = None,
        kind: Match = None,
    ) -> go.Figure:
        """Spend per ``by``: ``"user_id"``, ``"model"``, ``"provider"``, ``"day"`` (UTC) or another ledger
        column, as bars; summed in DuckDB (``kit.spend``) over all the rows the filters select."""
        if by != "day" and by not in LEDGER_COLUMNS:
            raise InvalidRequestError(
                f"cannot chart spend by {by!r}: use 'day' or a ledger column such as user_id, model, provider"
            )
        f = clean_filters(dict(user_id=user_id, since=since, until=until, experiment_id=experiment_id,
                               provider=provider, model=model, run_id=run_id, kind=kind))
        return spend_bars(self.kit.spend(by=by, **f), by, note=describe_filters(f))

    def tokens_vs_latency(
        self, tokens: str = "completion_tokens", *, user_id: Match = None, since: Time = None, until: Time = None,
        experiment_id: Match = None, provider: Match = None, model: Match = None, run_id: Match = None,
        kind: Match = None, last: int | None = DEFAULT_LAST,
    ) -> go.Figure:
        """Latency against ``tokens`` (``"completion_tokens"``, or ``"prompt_tokens"``, ``"total_tokens"``)
        per provider/model, with a least-squares line; the newest ``last`` attempts (None: all)."""
        df, note = self._read(dict(user_id=user_id, since=since, until=until, experiment_id=experiment_id,
                                   provider=provider, model=model, run_id=run_id, kind=kind), last)
        return tokens_vs_latency(df, tokens=tokens, note=note)
