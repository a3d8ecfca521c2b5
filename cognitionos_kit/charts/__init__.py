"""Plotly figures of the ledger.

- ``figures``: the figures, from a ledger DataFrame (``kit.usage()``) or totals computed in DuckDB.
- ``views``: ``Charts`` (``kit.charts``), which reads the ledger with filters and draws them.
"""

from .figures import (
    DEFAULT_LAST,
    FILTERS,
    MONEY_AXIS,
    PERCENTILES,
    ChartFilters,
    LatencyGroup,
    Match,
    Time,
    cache_bars,
    cumulative_spend,
    latency_distribution,
    latency_figure,
    latency_over_time,
    legend_margin,
    prompt_cache,
    spend_bars,
    spend_by,
    spend_figure,
    spend_over_time,
    template,
    tokens_vs_latency,
)
from .views import Charts, clean_filters, describe_filters, read_aggregates

__all__ = [
    "Charts", "ChartFilters", "FILTERS", "latency_distribution", "latency_over_time", "cumulative_spend", "spend_over_time",
    "LatencyGroup", "latency_figure", "spend_figure", "PERCENTILES", "read_aggregates",
    "spend_by", "spend_bars", "prompt_cache", "cache_bars", "tokens_vs_latency", "DEFAULT_LAST", "template",
    "legend_margin", "clean_filters", "describe_filters", "Match", "Time", "MONEY_AXIS",
]  # fmt: skip
